"""Views: what operators read (read-only: nothing here writes to Git or the cluster).

Owns the plan (plan), the status views (status_view), the text/JSON/Markdown reports
(report) and the dashboard's pages (dashboard_pages).
May import: run and every stage below it.
"""
