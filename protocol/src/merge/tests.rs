//! Tests for the parent module.
use super::*;
