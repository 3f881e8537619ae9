"""The mechanics of talking to one account: HTTP, the key gate, the scheduler.

The scheduler (with its circuit breaker and the optional Redis-shared pace) decides
when each request may leave; the HTTP transport carries it; observation counts it.
None of it knows the gateway's actions: that is the gateway layer's job.
"""
