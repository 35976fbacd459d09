//! End-to-end tests of edgehil live in `tests/`; this crate has no library code.
