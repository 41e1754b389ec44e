//! One conformance suite, two implementations of `BaseSpaceApi`: the in-crate fake (the
//! emulator's account model, no socket) and the HTTP client talking to the emulator. Both
//! must answer alike, so unit tests on the fake mean what they say about the real path.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bsmount::api::fake::FakeApi;
use bsmount::api::{ApiError, BaseSpaceApi, Credentials, HttpClient, ListKind, Pieces, RetryPolicy, Token};
use bsmount::emulator::account::{Account, AccountBuilder, Content};
use bytes::Bytes;

fn account() -> Account {
    let mut b = AccountBuilder::stable("Conformance");
    let p = b.project("Proj");
    let a = b.appsession(p, "Analysis", "DRAGEN");
    let s = b.sample(p, "S1", Some(a));
    b.file(s, "R1.fastq.gz", 3000, Content::Synthetic { seed: 1 }, None);
    b.file(
        s,
        "sub/R2.fastq.gz",
        (9 << 20) + 1,
        Content::Synthetic { seed: 2 },
        None,
    );
    b.sample(p, "S1", None);
    b.appresult(p, "Result", Some(a));
    let r = b.run("Run");
    b.file(
        r,
        "RunInfo.xml",
        12,
        Content::Memory(Bytes::from_static(b"<RunInfo/>\n\n")),
        None,
    );
    b.build()
}

/// The suite: everything the layers above rely on.
async fn conforms(api: Arc<dyn BaseSpaceApi>, acct: &Account) {
    let (user, _) = api.current_user().await.unwrap();
    assert_eq!(user.name.as_deref(), Some("Conformance"));
    let projects = api.list_entities(ListKind::Projects).await.unwrap();
    assert_eq!(projects.items.len(), 1);
    assert!(projects.skipped.is_empty());
    let pid = projects.items[0].entity.id.clone();
    assert_eq!(projects.items[0].entity.name.as_deref(), Some("Proj"));
    let raw: serde_json::Value = serde_json::from_str(&projects.items[0].raw).unwrap();
    assert_eq!(raw["Id"].as_str(), Some(pid.as_str()), ".json text is the item's own");
    let samples = api.list_entities(ListKind::Samples(pid.clone())).await.unwrap().items;
    let mut names: Vec<_> = samples.iter().map(|s| s.entity.name.clone().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["S1", "S1"]);
    let results = api
        .list_entities(ListKind::AppResults(pid.clone()))
        .await
        .unwrap()
        .items;
    assert_eq!(results.len(), 1);
    let sessions = api
        .list_entities(ListKind::AppSessions(pid.clone()))
        .await
        .unwrap()
        .items;
    assert_eq!(sessions.len(), 1);
    let outputs = api
        .list_entities(ListKind::AppSessionOutputs(sessions[0].entity.id.clone()))
        .await
        .unwrap()
        .items;
    let mut v1: Vec<String> = outputs
        .iter()
        .map(|o| {
            o.entity
                .v1pre3_id
                .clone()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    v1.sort();
    assert_eq!(v1, ["appresult", "sample"]);
    // Files: the first S1 (lowest id) has two.
    let mut sids: Vec<u64> = samples.iter().map(|s| s.entity.id.parse().unwrap()).collect();
    sids.sort();
    let with_files = sids
        .iter()
        .find(|id| {
            !acct
                .container(bsmount::emulator::account::ContainerKind::Sample, **id)
                .unwrap()
                .files
                .is_empty()
        })
        .unwrap();
    let files = api
        .list_files(ListKind::SampleFiles(with_files.to_string()))
        .await
        .unwrap()
        .items;
    let mut paths: Vec<_> = files.iter().map(|f| f.rel_path().to_string()).collect();
    paths.sort();
    assert_eq!(paths, ["R1.fastq.gz", "sub/R2.fastq.gz"]);
    for f in &files {
        let entry = &acct.files[&f.id.parse::<u64>().unwrap()];
        assert_eq!(f.size, Some(entry.size));
        assert_eq!(f.etag.as_deref(), Some(entry.etag()));
        let meta = api.content_meta(&f.id).await.unwrap();
        let start = f.size.unwrap() / 3;
        let len = 4096.min(f.size.unwrap() - start);
        let got = api
            .get_range(&meta.href_content, start, len, f.etag.as_deref(), Pieces::whole())
            .await
            .unwrap()
            .concat();
        let mut want = vec![0u8; len as usize];
        bsmount::emulator::account::fill(&entry.content, start, &mut want).unwrap();
        assert_eq!(got, want, "bytes of {}", f.rel_path());
        // Another version's ETag: refused as changed, never other bytes.
        let e = api
            .get_range(
                &meta.href_content,
                0,
                10,
                Some("0123456789abcdef0123456789abcdef"),
                Pieces::whole(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::Changed { .. }), "{e:?}");
    }
    // Multipart ETags are S3's: 8 MiB parts above 8 MiB.
    let big = files.iter().find(|f| f.size.unwrap() > 8 << 20).unwrap();
    assert!(big.etag.as_deref().unwrap().ends_with("-2"), "{:?}", big.etag);
    // Unknown ids are errors, not empty answers.
    assert!(api.list_files(ListKind::SampleFiles("999".into())).await.is_err());
    assert!(api.content_meta("999").await.is_err());
}

#[test]
fn the_fake_conforms() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acct = account();
    rt.block_on(conforms(FakeApi::new(account()), &acct));
}

#[test]
fn the_http_client_against_the_emulator_conforms() {
    let emu = common::Emu::start(account(), Default::default());
    let client = HttpClient::new(
        Credentials {
            api_server: emu.base.clone(),
            token: Token::new(emu.token.clone()),
            source: "test".into(),
        },
        RetryPolicy {
            max_attempts: 2,
            deadline: Duration::from_secs(10),
            ..RetryPolicy::default()
        },
    )
    .unwrap();
    let acct = account();
    emu.rt.block_on(conforms(Arc::new(client), &acct));
}
