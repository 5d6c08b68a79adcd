//! Test harness: throwaway PostgreSQL clusters of any major from 13 to 18.
