//! The board's files: served without a key (the page asks for one itself), each with
//! the content security policy; the page says whether keys are on. The page itself is
//! tested in a real browser by tools/dashboard-test.

use poem::http::{Method, StatusCode};

use crate::helpers::TestApp;

async fn served(app: &TestApp, path: &str, content_type: &str) -> String {
    let resp = app.client.get(path).send().await;
    assert_eq!(resp.0.status(), StatusCode::OK, "{path}");
    let headers = resp.0.headers().clone();
    assert_eq!(headers["content-type"], content_type, "{path}");
    let csp = headers["content-security-policy"].to_str().expect("ascii");
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{path}: {csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    resp.0.into_body().into_string().await.expect("body")
}

#[tokio::test]
async fn the_board_is_served_whole_and_says_whether_keys_are_on() {
    let open = TestApp::new();
    let page = served(&open, "/", "text/html; charset=utf-8").await;
    assert!(page.contains(r#"<script type="module" src="/dashboard/app.js">"#));
    assert!(!page.contains("http://") && !page.contains("https://"), "nothing fetched from elsewhere");
    assert!(served(&open, "/dashboard/app.js", "text/javascript; charset=utf-8").await.contains("/v1/events/ws"));
    served(&open, "/dashboard/app.css", "text/css; charset=utf-8").await;
    assert_eq!(open.get("/dashboard/config.json").await.json()["auth_required"], false);

    let keyed = TestApp::with_keys(&["supervisor:sk"]);
    served(&keyed, "/", "text/html; charset=utf-8").await;
    assert_eq!(keyed.get("/dashboard/config.json").await.json()["auth_required"], true);
    // The API behind it still wants the key.
    assert_eq!(keyed.get("/v1/calls").await.status, StatusCode::UNAUTHORIZED);

    let post = keyed.request(Method::POST, "/", None, None).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(keyed.get("/dashboard/nothing.js").await.status, StatusCode::NOT_FOUND);
}
