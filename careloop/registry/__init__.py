"""The registry: residents, homes, devices, staff, families and the organisation tree, in SQL (kernel).

`models` holds the tables, `store` opens a database and migrates it, `importer` loads CSV files, `cli` is the
`careloop registry` command group.
"""
