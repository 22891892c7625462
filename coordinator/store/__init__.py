"""The SQLite result store: schema and migrations, campaign state, results and
request tables."""
