use super::*;

fn cc(text: &str) -> CacheControl {
    CacheControl::parse([text.as_bytes()])
}

#[test]
fn directives_are_parsed_case_insensitively_with_quoted_values() {
    let parsed = cc("Max-Age=60, s-maxage=\"120\", No-Cache=\"Set-Cookie, X\", PUBLIC, stale-while-revalidate=30");
    assert_eq!(parsed.max_age, Some(60));
    assert_eq!(parsed.s_maxage, Some(120));
    assert!(parsed.no_cache && parsed.public);
    assert_eq!(parsed.stale_while_revalidate, Some(30));
    assert!(!parsed.private, "the quoted comma did not split off a directive");
}

#[test]
fn a_malformed_or_conflicting_delta_means_stale() {
    assert_eq!(cc("max-age=abc").max_age, Some(0));
    assert_eq!(cc("max-age=-1").max_age, Some(0));
    assert_eq!(CacheControl::parse([&b"max-age=60"[..], b"max-age=30"]).max_age, Some(0));
    assert_eq!(cc("max-age=60, max-age=60").max_age, Some(60), "a repeat that agrees is fine");
    assert_eq!(cc("max-age=99999999999999999999").max_age, Some(1 << 31));
}

fn timing(response_time: u64) -> Timing {
    Timing {
        request_time: response_time,
        response_time,
        date: Some(response_time),
        age: None,
        expires: None,
        last_modified: None,
    }
}

#[test]
fn age_follows_rfc_9111_section_4_2_3() {
    let mut t = timing(1_000);
    assert_eq!(t.current_age(1_000), 0);
    assert_eq!(t.current_age(1_030), 30, "resident time");
    t.age = Some(50);
    t.request_time = 998;
    assert_eq!(t.current_age(1_000), 52, "Age header plus the response delay");
    t.age = None;
    t.date = Some(900);
    assert_eq!(t.current_age(1_000), 100, "apparent age from a Date in the past");
    t.date = Some(2_000);
    assert_eq!(t.current_age(1_000), 2, "a Date in the future counts as no apparent age");
}

#[test]
fn lifetime_prefers_s_maxage_then_max_age_then_expires() {
    let mut t = timing(1_000);
    t.expires = Some(Some(1_100));
    assert_eq!(lifetime(&cc("s-maxage=10, max-age=20"), &t, 200, None), 10);
    assert_eq!(lifetime(&cc("max-age=20"), &t, 200, None), 20);
    assert_eq!(lifetime(&cc(""), &t, 200, None), 100);
    t.expires = Some(None);
    assert_eq!(lifetime(&cc(""), &t, 200, None), 0, "an invalid Expires means already expired");
}

#[test]
fn heuristic_freshness_only_when_configured() {
    let mut t = timing(10_000);
    t.last_modified = Some(0);
    let heuristic = Some(Heuristic { percent: 10, max: 86_400 });
    assert_eq!(lifetime(&cc(""), &t, 200, None), 0);
    assert_eq!(lifetime(&cc(""), &t, 200, heuristic), 1_000);
    assert_eq!(lifetime(&cc(""), &t, 302, heuristic), 0, "302 is not heuristically cacheable");
    let capped = Some(Heuristic { percent: 10, max: 60 });
    assert_eq!(lifetime(&cc(""), &t, 200, capped), 60);
}

fn stored<'a>(control: &'a CacheControl, lifetime: u64, age: u64) -> Stored<'a> {
    Stored { control, lifetime, age }
}

#[test]
fn fresh_stale_and_the_request_directives() {
    let response = cc("max-age=60");
    let none = CacheControl::default();
    assert_eq!(usable(&stored(&response, 60, 10), &none), Usable::Fresh { ttl: 50 });
    assert_eq!(usable(&stored(&response, 60, 60), &none), Usable::Revalidate, "at its lifetime it is stale");
    assert_eq!(usable(&stored(&response, 60, 10), &cc("no-cache")), Usable::Revalidate);
    assert_eq!(usable(&stored(&response, 60, 10), &cc("max-age=5")), Usable::Revalidate);
    assert_eq!(usable(&stored(&response, 60, 10), &cc("min-fresh=55")), Usable::Revalidate);
    assert_eq!(usable(&stored(&response, 60, 70), &cc("max-stale=20")), Usable::Fresh { ttl: -10 });
    assert_eq!(usable(&stored(&response, 60, 90), &cc("max-stale=20")), Usable::Revalidate);
    let no_cache = cc("max-age=60, no-cache");
    assert_eq!(usable(&stored(&no_cache, 60, 0), &none), Usable::Revalidate, "no-cache: always validated");
}

#[test]
fn stale_while_revalidate_and_stale_if_error_windows() {
    let response = cc("max-age=10, stale-while-revalidate=30, stale-if-error=100");
    let none = CacheControl::default();
    assert_eq!(usable(&stored(&response, 10, 20), &none), Usable::StaleWhileRevalidate { ttl: -10 });
    assert_eq!(usable(&stored(&response, 10, 50), &none), Usable::Revalidate, "past the window");
    assert!(usable_on_error(&stored(&response, 10, 100), &none));
    assert!(!usable_on_error(&stored(&response, 10, 120), &none));
    assert!(usable_on_error(&stored(&cc("max-age=10"), 10, 40), &cc("stale-if-error=60")), "the client may ask");
    let strict = cc("max-age=10, must-revalidate, stale-while-revalidate=30, stale-if-error=100");
    assert_eq!(usable(&stored(&strict, 10, 20), &none), Usable::Revalidate, "must-revalidate forbids stale");
    assert!(!usable_on_error(&stored(&strict, 10, 20), &none));
    let shared = cc("s-maxage=10, stale-if-error=100");
    assert!(!usable_on_error(&stored(&shared, 10, 20), &none), "s-maxage implies proxy-revalidate");
    assert_eq!(keep_for(&stored(&response, 10, 4)), 6 + 100);
    assert_eq!(keep_for(&stored(&strict, 10, 4)), 6);
}

fn exchange<'a>(request: &'a CacheControl, response: &'a CacheControl) -> Exchange<'a> {
    Exchange {
        method: "GET",
        request,
        request_has_authorization: false,
        status: 200,
        response,
        explicit_lifetime: true,
        has_validator: false,
        lifetime: 60,
        has_set_cookie: false,
        vary_star: false,
    }
}

#[test]
fn what_a_shared_cache_stores() {
    let none = CacheControl::default();
    let max_age = cc("max-age=60");
    assert_eq!(storable(&exchange(&none, &max_age), false), Ok(()));
    assert_eq!(storable(&Exchange { method: "POST", ..exchange(&none, &max_age) }, false), Err(NotStored::Method));
    assert_eq!(storable(&exchange(&none, &cc("max-age=60, no-store")), false), Err(NotStored::NoStore));
    assert_eq!(storable(&exchange(&cc("no-store"), &max_age), false), Err(NotStored::NoStore));
    assert_eq!(storable(&exchange(&none, &cc("max-age=60, private")), false), Err(NotStored::Private));
    let authorized = Exchange { request_has_authorization: true, ..exchange(&none, &max_age) };
    assert_eq!(storable(&authorized, false), Err(NotStored::Authorization));
    for allowing in ["max-age=60, public", "s-maxage=60", "max-age=60, must-revalidate"] {
        let response = cc(allowing);
        let authorized = Exchange { request_has_authorization: true, ..exchange(&none, &response) };
        assert_eq!(storable(&authorized, false), Ok(()), "{allowing}");
    }
    let cookie = Exchange { has_set_cookie: true, ..exchange(&none, &max_age) };
    assert_eq!(storable(&cookie, false), Err(NotStored::SetCookie));
    assert_eq!(storable(&cookie, true), Ok(()));
    let star = Exchange { vary_star: true, ..exchange(&none, &max_age) };
    assert_eq!(storable(&star, false), Err(NotStored::VaryStar));
    assert_eq!(storable(&Exchange { status: 206, ..exchange(&none, &max_age) }, false), Err(NotStored::Status));
    let implicit = Exchange { status: 302, explicit_lifetime: false, lifetime: 0, ..exchange(&none, &none) };
    assert_eq!(storable(&implicit, false), Err(NotStored::Status));
    let no_lifetime = Exchange { explicit_lifetime: false, lifetime: 0, ..exchange(&none, &none) };
    assert_eq!(storable(&no_lifetime, false), Err(NotStored::NoLifetime));
    let validated = Exchange { has_validator: true, ..no_lifetime };
    assert_eq!(storable(&validated, false), Ok(()), "stored to be revalidated with its ETag");
    let explicit_503 = Exchange { status: 503, ..exchange(&none, &max_age) };
    assert_eq!(storable(&explicit_503, false), Ok(()), "any final status with an explicit lifetime");
}

#[test]
fn conditional_requests_against_a_stored_response() {
    assert!(not_modified(Some("\"a\", \"b\""), None, Some("\"b\""), None));
    assert!(not_modified(Some("W/\"b\""), None, Some("\"b\""), None), "weak comparison");
    assert!(!not_modified(Some("\"c\""), Some(2_000), Some("\"b\""), Some(1_000)), "If-None-Match decides alone");
    assert!(not_modified(Some("*"), None, Some("\"x\""), None));
    assert!(not_modified(None, Some(2_000), None, Some(1_000)));
    assert!(!not_modified(None, Some(500), None, Some(1_000)), "modified since");
    assert!(!not_modified(None, None, Some("\"b\""), Some(1_000)), "not a conditional request");
}

#[test]
fn vary_names_and_normalised_values() {
    assert_eq!(
        vary_names([&b"Accept-Encoding, accept-language"[..]]),
        Some(vec!["accept-encoding".into(), "accept-language".into()])
    );
    assert_eq!(vary_names([&b"Accept, *"[..]]), None);
    assert_eq!(normalise_field([&b"gzip ,br"[..], b" zstd"]), Some("gzip, br, zstd".into()));
    assert_eq!(normalise_field(std::iter::empty::<&[u8]>()), None);
}
