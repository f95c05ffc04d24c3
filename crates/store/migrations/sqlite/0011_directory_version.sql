-- Nodes keep apps and channel accounts in memory. Every change to either
-- bumps this one version, in the same transaction; a node reads it (one
-- row by key) before trusting what it keeps, so a change made anywhere is
-- seen by the next request on every node.
CREATE TABLE directory_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
) STRICT;
INSERT INTO directory_version (id, version) VALUES (1, 0);

CREATE TRIGGER apps_inserted AFTER INSERT ON apps
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER apps_updated AFTER UPDATE ON apps
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER apps_deleted AFTER DELETE ON apps
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER channel_accounts_inserted AFTER INSERT ON channel_accounts
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER channel_accounts_updated AFTER UPDATE ON channel_accounts
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER channel_accounts_deleted AFTER DELETE ON channel_accounts
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
