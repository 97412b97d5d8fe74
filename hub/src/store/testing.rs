//! Fresh stores for tests: a new PostgreSQL database per test (dropped at
//! the end) or a new SQLite file, migrated.

use super::Store;

pub struct TestStore {
    pub store: Store,
    pg_name: Option<String>,
    dir: Option<std::path::PathBuf>,
}

fn admin_url() -> String {
    std::env::var("VAKA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

impl TestStore {
    pub async fn postgres() -> TestStore {
        let admin = admin_url();
        let name = format!("vaka_unit_{}", unique());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .expect("the test PostgreSQL (VAKA_TEST_DATABASE_URL) is reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create a test database");
        pool.close().await;
        let (base, _) = admin.rsplit_once('/').expect("a database URL with a path");
        let store = Store::connect(&format!("{base}/{name}"))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        TestStore {
            store,
            pg_name: Some(name),
            dir: None,
        }
    }

    pub async fn sqlite() -> TestStore {
        let dir = std::env::temp_dir().join(format!("vaka-unit-{}", unique()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = Store::connect(&format!("sqlite://{}", dir.join("t.db").display()))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        TestStore {
            store,
            pg_name: None,
            dir: Some(dir),
        }
    }

    /// Both backends, for tests that must hold on each.
    pub async fn both() -> [TestStore; 2] {
        [TestStore::postgres().await, TestStore::sqlite().await]
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = admin_url();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    }
                });
            })
            .join();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
