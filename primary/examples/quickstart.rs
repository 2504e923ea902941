//! Embeds hotblock: creates a database with two non-unique keys, writes in
//! transactions, and queries by unique and non-unique key.
//!
//! Run: `cargo run --release -p hotblock-primary --example quickstart`

use hotblock_primary::{DatabaseOptions, Db};

fn main() -> Result<(), hotblock_primary::Error> {
    let db = Db::in_memory();
    db.create_database("people", DatabaseOptions::with_indexes(["city", "team"]))?;

    let people: [(&str, &str, Option<&str>, &str); 4] = [
        ("ada", "london", Some("engines"), r#"{"born":1815}"#),
        ("grace", "new-york", Some("compilers"), r#"{"born":1906}"#),
        ("alan", "london", Some("compilers"), r#"{"born":1912}"#),
        ("edsger", "austin", None, r#"{"born":1930}"#),
    ];
    let mut txn = db.begin("people")?;
    for (key, city, team, payload) in people {
        txn.insert(
            key.as_bytes(),
            &[Some(city.as_bytes()), team.map(str::as_bytes)],
            payload.as_bytes(),
        )?;
    }
    let committed = txn.commit()?.expect("four inserts");
    println!(
        "committed 4 records at {} (delta: {} ops, {} bytes encoded)",
        committed.lsn,
        committed.delta.ops().len(),
        committed.delta.encoded_len()
    );

    let ada = db.get("people", b"ada")?.expect("ada was inserted");
    println!("ada -> {}", String::from_utf8_lossy(&ada.payload));
    for city in ["london", "austin"] {
        let keys = db.find("people", "city", city.as_bytes(), None)?;
        let names: Vec<_> = keys.iter().map(|k| String::from_utf8_lossy(k)).collect();
        println!("city={city}: {names:?}");
    }

    // An aborted transaction leaves no trace.
    let mut txn = db.begin("people")?;
    txn.delete(b"ada")?;
    txn.abort();
    assert!(db.get("people", b"ada")?.is_some());

    match db
        .begin("people")?
        .insert(b"ada", &[Some(b"paris"), None], b"{}")
    {
        Err(e) => println!("insert of an existing key: {e}"),
        Ok(()) => unreachable!("ada exists"),
    }
    println!("{} records, at {}", db.count("people")?, db.lsn());
    Ok(())
}
