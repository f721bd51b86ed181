//! One readable definition of every SQL object: `schema/thryve.sql` is the schema a fresh
//! `migrate` makes (tables, constraints, indexes, views, functions, triggers of schema `thryve`),
//! so a reader need not replay the migrations to know which definition of a function wins.
//! After changing a migration's effect, regenerate it:
//!
//! ```sh
//! UPDATE_SCHEMA_SNAPSHOT=1 cargo test --test api schema::
//! ```

use std::path::PathBuf;

use sqlx::PgPool;

use crate::support::TestDb;

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/thryve.sql")
}

/// The schema as text: each object's definition as Postgres itself prints it, in name order.
async fn describe(pool: &PgPool) -> String {
    let sections: [(&str, &str); 6] = [
        (
            "tables",
            "SELECT format(E'CREATE TABLE thryve.%I (\\n%s\\n);', c.relname,
                    string_agg(format('    %I %s%s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                                      CASE a.attcompression WHEN 'l' THEN ' COMPRESSION lz4'
                                                            WHEN 'p' THEN ' COMPRESSION pglz' ELSE '' END,
                                      CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
                                      coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')),
                               E',\\n' ORDER BY a.attnum))
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'thryve'
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
             WHERE c.relkind IN ('r', 'p')
             GROUP BY c.relname ORDER BY c.relname",
        ),
        (
            "constraints",
            "SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s;', con.conrelid::regclass, con.conname,
                           pg_get_constraintdef(con.oid))
             FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
             WHERE n.nspname = 'thryve' AND con.conrelid <> 0
             ORDER BY con.conrelid::regclass::text, con.conname",
        ),
        (
            "indexes",
            "SELECT indexdef || ';' FROM pg_indexes WHERE schemaname = 'thryve'
             ORDER BY tablename, indexname",
        ),
        (
            "views",
            "SELECT format(E'CREATE VIEW thryve.%I AS\n%s', viewname, rtrim(definition))
             FROM pg_views WHERE schemaname = 'thryve' ORDER BY viewname",
        ),
        (
            "functions",
            "SELECT pg_get_functiondef(p.oid) || ';' FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'thryve'
             ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)",
        ),
        (
            "triggers",
            "SELECT pg_get_triggerdef(t.oid) || ';' FROM pg_trigger t
             JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'thryve' AND NOT t.tgisinternal
             ORDER BY c.relname, t.tgname",
        ),
    ];
    let mut out = String::from(
        "-- The schema `thryve-bridge migrate` makes, as Postgres prints it: one definition per\n\
         -- object, the one that wins after every migration. Generated; do not edit. Regenerate\n\
         -- with: UPDATE_SCHEMA_SNAPSHOT=1 cargo test --test api schema::\n",
    );
    for (name, query) in sections {
        out.push_str(&format!("\n-- {name}\n\n"));
        let rows: Vec<String> = sqlx::query_scalar(query).fetch_all(pool).await.unwrap();
        for row in rows {
            out.push_str(row.trim_end());
            out.push_str("\n\n");
        }
    }
    out
}

#[tokio::test]
async fn the_committed_schema_snapshot_is_what_the_migrations_make() {
    let db = TestDb::new().await;
    let now = describe(&db.pool).await;
    let path = snapshot_path();
    if std::env::var_os("UPDATE_SCHEMA_SNAPSHOT").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &now).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != now {
        let first = committed
            .lines()
            .zip(now.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(now.lines().count()));
        panic!(
            "schema/thryve.sql is not what the migrations make (first difference at line {}:\n  \
             committed: {:?}\n  migrated:  {:?}).\nRegenerate it: UPDATE_SCHEMA_SNAPSHOT=1 cargo \
             test --test api schema::",
            first + 1,
            committed.lines().nth(first).unwrap_or("(end)"),
            now.lines().nth(first).unwrap_or("(end)"),
        );
    }
}
