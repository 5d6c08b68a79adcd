//! Fixtures and builders shared by pgstream's tests.
