"""Reports: the JSON + Markdown summary every job writes, and the tables it prints."""

from vitcompress.report.tables import markdown_table, model_row, write_report

__all__ = ["markdown_table", "model_row", "write_report"]
