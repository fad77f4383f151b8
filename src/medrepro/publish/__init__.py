"""Publishing: each paper's tables and figures, the audit of the published tables, the report and its HTML site."""
