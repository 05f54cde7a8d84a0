//! Durable line-protocol shipping (being written).
