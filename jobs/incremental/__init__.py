"""The parts of a refresh (the stage is ``jobs/refresh.py``, which reads as its steps):
the base run, new ids and merged interactions (``ids``), the projected and re-solved item
vectors (``vectors``), and the check of which users' lists can change (``rescoring``)."""
