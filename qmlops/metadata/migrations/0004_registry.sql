-- Model registry (filled in by the registry).
SELECT 1;
