"""The far side of a measurement reached over a control channel: a VM's guest today, another host later.

The channel (framed JSON with binary attachments) and the agent that serves it
import only the standard library, so a guest under an emulated CPU starts fast.
"""
