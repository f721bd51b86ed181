//! Credentials: ambiguous requests refused, secrets never in logs, errors or metrics.
