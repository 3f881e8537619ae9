"""The pure core: what the gateway's protocol and our records are, with no I/O.

Errors and the error policy, input validation, the wire form, XML answers, models,
chunking and billing. Nothing here opens a socket, a file or a task; everything above
builds on it.
"""
