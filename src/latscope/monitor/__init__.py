"""`latscope monitor`: the endless run, its interval files and its Prometheus exporter."""
