//! No secret reaches Debug output: config, router, caller, provider requests, admin replies and
//! eval options each hide the keys they hold (a `{:?}` in a log line or a panic message could
//! otherwise leak one). Here rather than in `config`, because it needs every layer above it.

#[test]
fn debug_output_never_holds_a_secret() {
    let config = memgate::config::Config::parse(
        "[providers.o]\nkind = \"openai\"\napi_key = \"sk-secret-config\"\n\
         [providers.a]\nkind = \"anthropic\"\napi_key = \"sk-secret-config\"\n\
         [providers.g]\nkind = \"gemini\"\napi_key = \"sk-secret-config\"\n",
    )
    .unwrap();
    let router = memgate::router::Router::new(&config).unwrap();
    let caller = memgate::auth::Caller {
        tenant: "t_1".to_owned(),
        byok: Some("sk-secret-byok".to_owned()),
        limits: memgate::limits::Limits::default(),
    };
    let req: memgate::ir::ChatRequest =
        serde_json::from_value(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .unwrap();
    let mut shown = vec![format!("{config:?}"), format!("{router:#?}"), format!("{caller:?}")];
    for model in ["o/m", "a/m", "g/m"] {
        let route = router.resolve(model).unwrap();
        for key in [Some("sk-secret-byok"), None] {
            let upstream = route.provider.chat_request(&req, key).unwrap();
            assert!(upstream.headers.iter().any(|(_, v)| v.contains("sk-secret")), "{model}");
            shown.push(format!("{upstream:?}"));
        }
    }
    let reply = memgate::admin::AdminReply {
        key: Some("msk_secret_new_key".to_owned()),
        ..Default::default()
    };
    shown.push(format!("{reply:?}"));
    let eval = memgate::eval::Options {
        data: "d".into(),
        model: "m".to_owned(),
        judge: "j".to_owned(),
        limit: None,
        concurrency: 1,
        out: "o".into(),
        url: None,
        key: Some("msk_secret_eval".to_owned()),
        config: None,
    };
    shown.push(format!("{eval:?}"));
    for s in shown {
        assert!(
            !s.contains("sk-secret") && !s.contains("msk_secret"),
            "a secret in Debug output: {s}"
        );
    }
}
