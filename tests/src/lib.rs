//! Shared test support lives in tests/tests/support.
