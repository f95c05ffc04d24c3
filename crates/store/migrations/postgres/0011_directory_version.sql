-- Nodes keep apps and channel accounts in memory. Every change to either
-- bumps this one version, in the same transaction; a node reads it (one
-- row by key) before trusting what it keeps, so a change made anywhere is
-- seen by the next request on every node.
CREATE TABLE directory_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 0);

CREATE FUNCTION bump_directory_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE directory_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER apps_changed AFTER INSERT OR UPDATE OR DELETE ON apps
    FOR EACH STATEMENT EXECUTE FUNCTION bump_directory_version();
CREATE TRIGGER channel_accounts_changed AFTER INSERT OR UPDATE OR DELETE ON channel_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION bump_directory_version();
