-- The flist schema of threefoldtech/rfs (`schema/schema.sql`), statement for
-- statement: rfs executes it when it creates an flist, and SQLite keeps each
-- CREATE statement's text (with its inline comments) in `sqlite_schema`, so
-- the statements below are kept exactly as rfs writes them.

-- One row per file system entry; the root is ino 1, with parent 0.
CREATE TABLE IF NOT EXISTS inode (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER,
    name VARCHAR(255),
    size INTEGER,
    uid INTEGER,
    gid INTEGER,
    mode INTEGER,
    rdev INTEGER,
    ctime INTEGER,
    mtime INTEGER
);

CREATE INDEX IF NOT EXISTS parents ON inode (parent);

-- Per-entry extra data: a symbolic link's target.
CREATE TABLE IF NOT EXISTS extra (
    ino INTEGER PRIMARY KEY,
    data VARCHAR(4096)
);

-- A regular file's blocks, in file order (the order of insertion).
CREATE TABLE IF NOT EXISTS block (
    ino INTEGER,
    id VARCHAR(32),
    key VARCHAR(32)
);

CREATE INDEX IF NOT EXISTS block_ino ON block (ino);

-- Flist-wide key/value tags.
CREATE TABLE IF NOT EXISTS tag (
    key VARCHAR(10) PRIMARY KEY,
    value VARCHAR(255)
);

-- Where blocks are: the stores serving block ids whose first byte lies in
-- start..=end.
CREATE TABLE IF NOT EXISTS route (
    start integer, -- one byte hash prefix
    end integer, -- one byte hash prefix
    url VARCHAR(2048)
);
