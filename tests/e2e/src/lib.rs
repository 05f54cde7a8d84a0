//! Helpers for inferwatt's end-to-end tests.
