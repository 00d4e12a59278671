-- Feature sets and their materialisations (filled in by the feature store).
SELECT 1;
