//! What the ApiServer sends back: any body (with or without `Retry-After`) is turned into an
//! error report, a Service or an object — or refused — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = k8s_endpoints::client::parse_status(data);
    let mut headers = http::HeaderMap::new();
    if let Some((&first, rest)) = data.split_first()
        && first % 2 == 0
        && let Ok(v) = http::HeaderValue::from_bytes(&rest[..rest.len().min(16)])
    {
        headers.insert(http::header::RETRY_AFTER, v);
    }
    let e = k8s_endpoints::ApiError::from_response("PUT", "/api/v1/namespaces/a/endpoints/b", 422, &headers, data);
    let _ = e.to_string();
    let _ = k8s_endpoints::ServiceInfo::from_json(data);
    let _ = k8s_endpoints::codec::from_json::<k8s_endpoints::Endpoints>(data);
    let _ = k8s_endpoints::codec::from_json::<k8s_endpoints::Lease>(data);
});
