-- Operating fixes: a running experiment's bucket ranges are fixed when it starts, and the prediction log tells
-- the rows of one batch request apart from separate requests.

-- [[lo, hi], ...] of the layer's buckets, taken from the free ones when the experiment starts; never moved.
ALTER TABLE experiments ADD COLUMN buckets JSON;

-- 0 (or NULL, rows logged before this migration) for a request's first row, i for the i-th row of a batch:
-- requests are counted and their latency taken once, rows are counted separately.
ALTER TABLE predictions ADD COLUMN batch_index INTEGER;
