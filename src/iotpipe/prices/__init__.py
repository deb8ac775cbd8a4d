"""Dated AWS list price tables, one JSON file per region, read by :mod:`iotpipe.cost`."""
