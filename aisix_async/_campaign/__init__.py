"""Resumable campaigns: the campaign, its ledger, and the SQLite journal behind it.

``campaign`` drives bulk sends through a ``ledger`` that records every chunk in the
``journal``; the journal's ``file`` (format, schema, lock), its ``writer`` thread and its
``sql`` statements are its parts. The ``reader`` opens a journal to read it alone,
without a client (``aisix campaign``).
"""
