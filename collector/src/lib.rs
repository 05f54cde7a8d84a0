//! inferwatt-collector: ingest → store → indicators → report.
