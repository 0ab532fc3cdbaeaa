//! What the Redis test files share: a plain connection for the commands the backend never
//! sends (CLIENT, PUBSUB, KEYS).

/// A plain connection to the server (or one cluster node) at `url`.
pub async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
