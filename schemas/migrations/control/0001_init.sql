-- The control schema: what every component shares. Unqualified names: the runner sets search_path.

-- Which shard owns each of the 1024 virtual partitions, by version. The highest version is current.
CREATE TABLE partition_maps (
    version     integer PRIMARY KEY,
    shard_count integer NOT NULL CHECK (shard_count BETWEEN 1 AND 1024),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE partition_assignments (
    version    integer NOT NULL REFERENCES partition_maps (version),
    vpartition integer NOT NULL CHECK (vpartition BETWEEN 0 AND 1023),
    shard      integer NOT NULL CHECK (shard >= 0),
    PRIMARY KEY (version, vpartition)
);

-- Each shard's journal chain head, published outside the shard's schema: rewriting a shard's
-- history (even recomputing its hashes) no longer matches what was published here before.
CREATE TABLE chain_checkpoints (
    shard        integer NOT NULL,
    seq          bigint NOT NULL,
    hash         bytea NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shard, seq)
);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER chain_checkpoints_append_only BEFORE UPDATE OR DELETE ON chain_checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER chain_checkpoints_no_truncate BEFORE TRUNCATE ON chain_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
