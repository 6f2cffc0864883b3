-- The replicas of a sharded `waymark serve` that share this history: each
-- writes its row every beat (seen_ms) and reads all of them to tell which
-- shards hold a lease, taking over the share of one whose lease ran out.
-- joined_ms is when its current lease began: a replica that comes back
-- takes its share again only once the others have seen it.
CREATE TABLE IF NOT EXISTS replicas (
    location TEXT NOT NULL,
    shards BIGINT NOT NULL,
    shard BIGINT NOT NULL,
    instance TEXT NOT NULL,
    joined_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL,
    PRIMARY KEY (location, shards, shard)
);
