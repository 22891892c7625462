"""``lem report CAMPAIGN -o DIR``: one self-contained HTML page per campaign.

page.py writes the page (``write_report``) from the store (gather.py, rows.py), with
matplotlib figures (plots.py) and reference sections (sections.py); command.py is the
click command. Nothing is imported here, so that ``lem --help`` stays quick.
"""
