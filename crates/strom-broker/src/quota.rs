//! Client quotas (Kafka's `ClientQuotaManager`, KIP-13/55/124/599).
//!
//! Quotas are configured per entity — a user, a client-id, or both, each a
//! name or the default — and stored in the metadata image
//! ([`ClientQuotas`]). [`QuotaManager`] (owned by [`crate::Broker`], shared by
//! every connection) resolves which entity's quota applies to a
//! (user, client-id) in Kafka's order, keeps one rate sensor per resolved
//! entity and turns a violation into a throttle time:
//! `(observed − quota) / quota × window`, as Kafka does. A connection that
//! was throttled is muted (reads no further request) for that long; the
//! per-connection [`SessionQuota`] holds the mute and caches the resolution,
//! so the hot path with quotas configured takes one atomic load, one string
//! compare and the entity's own sensor lock — and with no quota of a type
//! configured, one atomic load.
//!
//! `controller_mutation_rate` (KIP-599) is a token bucket of partitions
//! created/deleted: CreateTopics/CreatePartitions/DeleteTopics at their
//! strict versions fail the topics beyond it with THROTTLING_QUOTA_EXCEEDED.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::handlers::RequestContext;
use crate::security::KafkaPrincipal;

/// Entity type names of DescribeClientQuotas/AlterClientQuotas.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// The quota kinds Kafka enforces per user/client-id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaType {
    /// `producer_byte_rate`: bytes/s of Produce requests.
    Produce,
    /// `consumer_byte_rate`: bytes/s of Fetch responses.
    Fetch,
    /// `request_percentage`: % of one core spent on the client's requests.
    Request,
    /// `controller_mutation_rate`: partitions created/deleted per second.
    ControllerMutation,
}

impl QuotaType {
    pub const ALL: [QuotaType; 4] = [
        QuotaType::Produce,
        QuotaType::Fetch,
        QuotaType::Request,
        QuotaType::ControllerMutation,
    ];

    /// The config key (Kafka's `QuotaConfig` names).
    pub fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => "producer_byte_rate",
            QuotaType::Fetch => "consumer_byte_rate",
            QuotaType::Request => "request_percentage",
            QuotaType::ControllerMutation => "controller_mutation_rate",
        }
    }

    pub fn from_key(key: &str) -> Option<QuotaType> {
        QuotaType::ALL.into_iter().find(|t| t.key() == key)
    }

    /// Byte rates are LONG configs in Kafka: the value must be integral.
    fn integral(self) -> bool {
        matches!(self, QuotaType::Produce | QuotaType::Fetch)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A user or client-id component: a name, or the default (`<default>`,
/// a null name on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Name(String),
}

impl EntityName {
    fn from_wire(name: Option<&str>) -> EntityName {
        name.map_or(EntityName::Default, |n| EntityName::Name(n.to_string()))
    }

    /// The wire form: `None` for the default.
    pub fn as_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Name(n) => Some(n),
        }
    }
}

/// A quota entity: user, client-id, or both (at least one is set).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    /// Builds an entity from (entity type, name) pairs as AlterClientQuotas
    /// sends them, with Kafka's validation.
    pub fn from_components<'a>(
        components: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<QuotaEntity, String> {
        let mut e = QuotaEntity {
            user: None,
            client_id: None,
        };
        let mut any = false;
        for (ty, name) in components {
            any = true;
            let slot = match ty {
                USER => &mut e.user,
                CLIENT_ID => &mut e.client_id,
                IP => {
                    return Err(
                        "ip quotas (connection_creation_rate) are not supported by Strom".into(),
                    )
                }
                other => return Err(format!("Unhandled client quota entity type: {other}")),
            };
            if slot.is_some() {
                return Err(format!("Invalid empty or duplicate entity type {ty}"));
            }
            *slot = Some(EntityName::from_wire(name));
        }
        if !any {
            return Err("Invalid empty client quota entity".into());
        }
        Ok(e)
    }

    /// (entity type, name) pairs in the wire's order: user, then client-id.
    pub fn components(&self) -> impl Iterator<Item = (&'static str, &EntityName)> {
        self.user
            .iter()
            .map(|n| (USER, n))
            .chain(self.client_id.iter().map(|n| (CLIENT_ID, n)))
    }

    fn has(&self, ty: &str) -> bool {
        match ty {
            USER => self.user.is_some(),
            CLIENT_ID => self.client_id.is_some(),
            _ => false,
        }
    }

    fn get(&self, ty: &str) -> Option<&EntityName> {
        match ty {
            USER => self.user.as_ref(),
            CLIENT_ID => self.client_id.as_ref(),
            _ => None,
        }
    }
}

/// Configured values of one entity: quota key → value.
pub type QuotaValues = BTreeMap<String, f64>;

#[derive(Clone, Serialize, Deserialize)]
struct QuotaRecord {
    entity: QuotaEntity,
    values: QuotaValues,
}

/// Every configured client quota; part of the metadata image and persisted
/// with it (as a list, JSON maps having string keys only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<QuotaRecord>", into = "Vec<QuotaRecord>")]
pub struct ClientQuotas {
    entries: BTreeMap<QuotaEntity, QuotaValues>,
}

impl From<Vec<QuotaRecord>> for ClientQuotas {
    fn from(v: Vec<QuotaRecord>) -> Self {
        ClientQuotas {
            entries: v.into_iter().map(|r| (r.entity, r.values)).collect(),
        }
    }
}

impl From<ClientQuotas> for Vec<QuotaRecord> {
    fn from(q: ClientQuotas) -> Self {
        q.entries
            .into_iter()
            .map(|(entity, values)| QuotaRecord { entity, values })
            .collect()
    }
}

impl FromIterator<(QuotaEntity, QuotaValues)> for ClientQuotas {
    fn from_iter<I: IntoIterator<Item = (QuotaEntity, QuotaValues)>>(it: I) -> Self {
        ClientQuotas {
            entries: it.into_iter().collect(),
        }
    }
}

/// One change of AlterClientQuotas: set `key` to a value, or remove it.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaOp {
    pub key: String,
    /// `None` removes the key.
    pub value: Option<f64>,
}

impl ClientQuotas {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, entity: &QuotaEntity) -> Option<&QuotaValues> {
        self.entries.get(entity)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&QuotaEntity, &QuotaValues)> {
        self.entries.iter()
    }

    fn value(
        &self,
        user: Option<EntityName>,
        client_id: Option<EntityName>,
        key: &str,
    ) -> Option<f64> {
        self.entries
            .get(&QuotaEntity { user, client_id })
            .and_then(|v| v.get(key).copied())
    }

    /// Checks every op of an AlterClientQuotas entry (Kafka's
    /// `ClientQuotaControlManager` rules); the message is the error's.
    pub fn validate(ops: &[QuotaOp]) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for op in ops {
            let Some(ty) = QuotaType::from_key(&op.key) else {
                return Err(format!("Invalid configuration key {}", op.key));
            };
            if !seen.insert(op.key.as_str()) {
                return Err(format!("Duplicate quota key {}", op.key));
            }
            if let Some(v) = op.value {
                if !v.is_finite() {
                    return Err(format!("Proposed value for {} is not a number", op.key));
                }
                if v < 0.0 {
                    return Err(format!(
                        "Proposed value for {} must not be negative: {v}",
                        op.key
                    ));
                }
                if ty.integral() && (v - v.floor() > 1e-16 || v > i64::MAX as f64) {
                    return Err(format!("Proposed value for {} must be an integer.", op.key));
                }
            }
        }
        Ok(())
    }

    /// Applies validated ops to one entity; an entity left without values is
    /// removed.
    pub fn apply(&mut self, entity: &QuotaEntity, ops: &[QuotaOp]) {
        let values = self.entries.entry(entity.clone()).or_default();
        for op in ops {
            match op.value {
                Some(v) => {
                    values.insert(op.key.clone(), v);
                }
                None => {
                    values.remove(&op.key);
                }
            }
        }
        if values.is_empty() {
            self.entries.remove(entity);
        }
    }

    /// DescribeClientQuotas matching (Kafka's `ClientQuotasImage.describe`):
    /// `exact` maps an entity type to a name (`None` = the default),
    /// `specified` lists types that must be present; `strict` also requires
    /// the entity to have no other component.
    pub fn matching<'a>(
        &'a self,
        filter: &'a QuotaFilter,
    ) -> impl Iterator<Item = (&'a QuotaEntity, &'a QuotaValues)> + 'a {
        self.entries.iter().filter(move |(e, _)| filter.matches(e))
    }

    /// The quota of `ty` that applies to `user`/`client_id`, and the sensor
    /// it is accounted on (Kafka's `DefaultQuotaCallback` resolution order
    /// and metric tags): user+client, user+default client, user, default
    /// user+client, default user+default client, default user, client,
    /// default client.
    pub fn resolve(&self, ty: QuotaType, user: &str, client_id: &str) -> Option<(f64, SensorKey)> {
        use EntityName::{Default as D, Name};
        // Which of the caller's names tag the sensor: a user-level quota
        // is shared by all of the user's client-ids, and so on.
        const BOTH: (bool, bool) = (true, true);
        const USER_TAG: (bool, bool) = (true, false);
        const CLIENT_TAG: (bool, bool) = (false, true);
        let key = ty.key();
        let u = || Some(Name(user.to_string()));
        let c = || Some(Name(client_id.to_string()));
        let candidates = [
            (u(), c(), BOTH),
            (u(), Some(D), BOTH),
            (u(), None, USER_TAG),
            (Some(D), c(), BOTH),
            (Some(D), Some(D), BOTH),
            (Some(D), None, USER_TAG),
            (None, c(), CLIENT_TAG),
            (None, Some(D), CLIENT_TAG),
        ];
        candidates.into_iter().find_map(|(uu, cc, (tu, tc))| {
            self.value(uu, cc, key).map(|v| {
                let sensor = SensorKey::new(
                    ty,
                    if tu { user } else { "" },
                    if tc { client_id } else { "" },
                );
                (v, sensor)
            })
        })
    }
}

/// A DescribeClientQuotas filter, validated.
#[derive(Debug, Default)]
pub struct QuotaFilter {
    exact: Vec<(String, Option<String>)>,
    specified: Vec<String>,
    strict: bool,
}

/// Why a DescribeClientQuotas filter is refused: INVALID_REQUEST or
/// UNSUPPORTED_VERSION, as Kafka answers.
#[derive(Debug, PartialEq)]
pub enum FilterError {
    Invalid(String),
    Unsupported(String),
}

/// DescribeClientQuotas match types.
pub const MATCH_TYPE_EXACT: i8 = 0;
pub const MATCH_TYPE_DEFAULT: i8 = 1;
pub const MATCH_TYPE_SPECIFIED: i8 = 2;

impl QuotaFilter {
    /// Builds a filter from (entity type, match type, match) components.
    pub fn new<'a>(
        components: impl IntoIterator<Item = (&'a str, i8, Option<&'a str>)>,
        strict: bool,
    ) -> Result<QuotaFilter, FilterError> {
        let mut f = QuotaFilter {
            strict,
            ..Default::default()
        };
        for (ty, match_type, m) in components {
            if ty.is_empty() {
                return Err(FilterError::Invalid("Invalid empty entity type.".into()));
            }
            if f.exact.iter().any(|(t, _)| t == ty) || f.specified.iter().any(|t| t == ty) {
                return Err(FilterError::Invalid(format!(
                    "Entity type {ty} cannot appear more than once in the filter."
                )));
            }
            if ![USER, CLIENT_ID, IP].contains(&ty) {
                return Err(FilterError::Unsupported(format!(
                    "Unsupported entity type {ty}"
                )));
            }
            match match_type {
                MATCH_TYPE_EXACT => match m {
                    None => {
                        return Err(FilterError::Invalid(
                            "Request specified MATCH_TYPE_EXACT, but set match string to null."
                                .into(),
                        ))
                    }
                    Some(m) => f.exact.push((ty.to_string(), Some(m.to_string()))),
                },
                MATCH_TYPE_DEFAULT => {
                    if m.is_some() {
                        return Err(FilterError::Invalid(
                            "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                                .into(),
                        ));
                    }
                    f.exact.push((ty.to_string(), None));
                }
                MATCH_TYPE_SPECIFIED => {
                    if m.is_some() {
                        return Err(FilterError::Invalid(
                            "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."
                                .into(),
                        ));
                    }
                    f.specified.push(ty.to_string());
                }
                other => {
                    return Err(FilterError::Unsupported(format!(
                        "Unknown match type {other}"
                    )))
                }
            }
        }
        let has =
            |t: &str| f.exact.iter().any(|(x, _)| x == t) || f.specified.iter().any(|x| x == t);
        if has(IP) && (has(USER) || has(CLIENT_ID)) {
            return Err(FilterError::Invalid(
                "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.".into(),
            ));
        }
        Ok(f)
    }

    fn matches(&self, e: &QuotaEntity) -> bool {
        let n = e.user.is_some() as usize + e.client_id.is_some() as usize;
        if self.strict && n != self.exact.len() + self.specified.len() {
            return false;
        }
        self.exact.iter().all(|(ty, name)| {
            e.get(ty)
                .is_some_and(|have| have.as_wire() == name.as_deref())
        }) && self.specified.iter().all(|ty| e.has(ty))
    }
}

/// `quota.window.num`, `quota.window.size.seconds` and their
/// `controller.` twins (Kafka's defaults: 11 samples of 1 s).
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaConfig {
    pub window_num: u32,
    pub window_size_ms: u64,
    pub controller_window_num: u32,
    pub controller_window_size_ms: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            window_num: 11,
            window_size_ms: 1000,
            controller_window_num: 11,
            controller_window_size_ms: 1000,
        }
    }
}

impl QuotaConfig {
    /// Reads the quota window settings from `server.properties` keys;
    /// `Err((key, value, reason))` for a bad value.
    pub fn from_raw(
        raw: &BTreeMap<String, String>,
    ) -> Result<QuotaConfig, (String, String, String)> {
        let mut c = QuotaConfig::default();
        let num = |key: &str, dflt: u64| -> Result<u64, (String, String, String)> {
            match raw.get(key) {
                None => Ok(dflt),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n >= 1 && n <= i32::MAX as u64 => Ok(n),
                    _ => Err((
                        key.to_string(),
                        v.clone(),
                        "must be an integer of at least 1".into(),
                    )),
                },
            }
        };
        c.window_num = num("quota.window.num", 11)? as u32;
        c.window_size_ms = num("quota.window.size.seconds", 1)? * 1000;
        c.controller_window_num = num("controller.quota.window.num", 11)? as u32;
        c.controller_window_size_ms = num("controller.quota.window.size.seconds", 1)? * 1000;
        Ok(c)
    }
}

/// The sensor a quota is accounted on: quota type plus Kafka's metric tags
/// (user, client-id; empty when the quota is not per that component).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SensorKey {
    pub quota_type: QuotaType,
    pub user: String,
    pub client_id: String,
}

impl SensorKey {
    fn new(quota_type: QuotaType, user: &str, client_id: &str) -> SensorKey {
        SensorKey {
            quota_type,
            user: user.to_string(),
            client_id: client_id.to_string(),
        }
    }
}

/// Kafka's `Rate` over a `SampledStat`: `samples` windows of `window_ms`;
/// a window is replaced once it is `window_ms` old, and windows older than
/// `samples × window_ms` are reset before measuring. Times in ms on any
/// monotonic clock.
#[derive(Debug)]
pub struct Rate {
    samples: Vec<Sample>,
    current: usize,
    num: usize,
    window_ms: u64,
    last_record_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: u64,
    value: f64,
}

impl Rate {
    pub fn new(num: u32, window_ms: u64) -> Rate {
        Rate {
            samples: Vec::with_capacity(num as usize),
            current: 0,
            num: num.max(1) as usize,
            window_ms: window_ms.max(1),
            last_record_ms: 0,
        }
    }

    /// Adds `value` at `now_ms`.
    pub fn record(&mut self, value: f64, now_ms: u64) {
        self.last_record_ms = now_ms;
        if self.samples.is_empty() {
            self.samples.push(Sample {
                start_ms: now_ms,
                value: 0.0,
            });
            self.current = 0;
        }
        if now_ms.saturating_sub(self.samples[self.current].start_ms) >= self.window_ms {
            self.current = (self.current + 1) % self.num;
            let fresh = Sample {
                start_ms: now_ms,
                value: 0.0,
            };
            if self.current >= self.samples.len() {
                self.samples.push(fresh);
            } else {
                self.samples[self.current] = fresh;
            }
        }
        self.samples[self.current].value += value;
    }

    fn purge(&mut self, now_ms: u64) {
        let expire = self.num as u64 * self.window_ms;
        for s in &mut self.samples {
            if now_ms.saturating_sub(s.start_ms) >= expire {
                *s = Sample {
                    start_ms: now_ms,
                    value: 0.0,
                };
            }
        }
    }

    /// The window the rate is measured over (Kafka's `Rate.windowSize`):
    /// from the oldest sample to now, but at least `samples − 1` full
    /// windows, so a young sensor does not report a huge rate.
    pub fn window_size_ms(&mut self, now_ms: u64) -> u64 {
        self.purge(now_ms);
        let oldest = self
            .samples
            .iter()
            .map(|s| s.start_ms)
            .min()
            .unwrap_or(now_ms);
        let mut elapsed = now_ms.saturating_sub(oldest);
        let full = elapsed / self.window_ms;
        let min_full = self.num as u64 - 1;
        if full < min_full {
            elapsed += (min_full - full) * self.window_ms;
        }
        elapsed
    }

    /// When a value was last recorded (0: never).
    fn last_used_ms(&self) -> u64 {
        self.last_record_ms
    }

    /// Units per second over the window.
    pub fn measure(&mut self, now_ms: u64) -> f64 {
        let window = self.window_size_ms(now_ms);
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        if window == 0 {
            return 0.0;
        }
        total * 1000.0 / window as f64
    }

    /// Records `value` and returns the throttle time Kafka would answer:
    /// 0 within `bound`, else `(rate − bound) / bound × window`.
    pub fn record_and_throttle(&mut self, value: f64, bound: f64, now_ms: u64) -> u64 {
        self.record(value, now_ms);
        self.throttle(bound, now_ms)
    }

    /// The throttle time for the current rate against `bound`.
    pub fn throttle(&mut self, bound: f64, now_ms: u64) -> u64 {
        let rate = self.measure(now_ms);
        if rate <= bound {
            return 0;
        }
        if bound <= 0.0 {
            return u64::MAX;
        }
        let window = self.window_size_ms(now_ms) as f64;
        ((rate - bound) / bound * window).round() as u64
    }
}

/// KIP-599's token bucket: `rate` tokens per second up to a burst of
/// `rate × samples × window`; a record takes tokens (possibly below zero);
/// the bucket is exceeded while it is negative, for `−tokens / rate` s.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: u64,
    burst_seconds: f64,
}

impl TokenBucket {
    pub fn new(num: u32, window_ms: u64, rate: f64, now_ms: u64) -> TokenBucket {
        let burst_seconds = num as f64 * window_ms as f64 / 1000.0;
        TokenBucket {
            tokens: rate * burst_seconds,
            last_ms: now_ms,
            burst_seconds,
        }
    }

    fn refill(&mut self, rate: f64, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + rate * elapsed).min(rate * self.burst_seconds);
        self.last_ms = now_ms.max(self.last_ms);
    }

    /// Milliseconds until the bucket is non-negative again (0: not exceeded).
    pub fn throttle(&mut self, rate: f64, now_ms: u64) -> u64 {
        self.refill(rate, now_ms);
        if self.tokens >= 0.0 {
            0
        } else if rate <= 0.0 {
            u64::MAX
        } else {
            (-self.tokens / rate * 1000.0).round() as u64
        }
    }

    /// Takes `permits`; returns the throttle time after taking them.
    pub fn record(&mut self, permits: f64, rate: f64, now_ms: u64) -> u64 {
        self.refill(rate, now_ms);
        self.tokens -= permits;
        self.throttle(rate, now_ms)
    }
}

/// One quota sensor, shared by every connection of the entity it
/// accounts (its own lock: connections of other entities never contend).
#[derive(Debug)]
pub struct Sensor {
    rate: Mutex<Rate>,
    /// Total throttle time answered on this sensor (ms), for metrics.
    throttled_ms: AtomicU64,
}

/// Largest throttle a quota answers: Kafka bounds the request quota's at
/// one window; byte rates are not bounded (the throttle is what brings the
/// rate back to the quota), beyond fitting `throttle_time_ms`.
fn cap(ty: QuotaType, c: &QuotaConfig) -> u64 {
    match ty {
        QuotaType::Request => c.window_size_ms,
        _ => i32::MAX as u64,
    }
}

/// Kafka's inactive sensor expiry (`InactiveSensorExpirationTimeSeconds`).
const SENSOR_EXPIRY_MS: u64 = 3600 * 1000;

/// The broker's quota state: the resolved configuration and the sensors.
pub struct QuotaManager {
    config: QuotaConfig,
    /// Bumped on every configuration change; connections re-resolve then.
    generation: AtomicU64,
    /// Whether any quota of each type is configured (the fast path).
    enabled: [AtomicBool; 4],
    quotas: RwLock<Arc<ClientQuotas>>,
    sensors: Mutex<HashMap<SensorKey, Arc<Sensor>>>,
    buckets: Mutex<HashMap<SensorKey, TokenBucket>>,
    epoch: Instant,
}

impl QuotaManager {
    pub fn new(config: QuotaConfig, quotas: &ClientQuotas) -> QuotaManager {
        let m = QuotaManager {
            config,
            generation: AtomicU64::new(1),
            enabled: Default::default(),
            quotas: RwLock::new(Arc::new(ClientQuotas::default())),
            sensors: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        };
        m.update(quotas);
        m
    }

    pub fn config(&self) -> &QuotaConfig {
        &self.config
    }

    /// Installs a new configuration (after AlterClientQuotas or at start).
    /// Sensors keep their samples, as Kafka's do when a quota changes.
    pub fn update(&self, quotas: &ClientQuotas) {
        for ty in QuotaType::ALL {
            let any = quotas.iter().any(|(_, v)| v.contains_key(ty.key()));
            self.enabled[ty.index()].store(any, Ordering::Release);
        }
        *self.quotas.write().unwrap() = Arc::new(quotas.clone());
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether any quota of `ty` is configured.
    pub fn enabled(&self, ty: QuotaType) -> bool {
        self.enabled[ty.index()].load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn sensor(&self, key: SensorKey) -> Arc<Sensor> {
        let now = self.now_ms();
        let mut sensors = self.sensors.lock().unwrap();
        if !sensors.contains_key(&key) {
            // Kafka drops a quota sensor after an hour without use; here on
            // the (rare) creation of another, so the map tracks live
            // clients, not every client-id ever seen. A sensor a connection
            // still caches is kept.
            sensors.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || now.saturating_sub(s.rate.lock().unwrap().last_used_ms()) < SENSOR_EXPIRY_MS
            });
        }
        sensors
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Sensor {
                    rate: Mutex::new(Rate::new(
                        self.config.window_num,
                        self.config.window_size_ms,
                    )),
                    throttled_ms: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Resolves (slow path, on a cache miss): the quota and its sensor.
    fn lookup(&self, ty: QuotaType, user: &str, client_id: &str) -> Option<(Arc<Sensor>, f64)> {
        let quotas = self.quotas.read().unwrap().clone();
        let (bound, key) = quotas.resolve(ty, user, client_id)?;
        Some((self.sensor(key), bound))
    }

    /// Records `value` of `ty` for a connection and returns the throttle
    /// time (ms). Returns 0 at once when no quota of `ty` is configured.
    pub fn record(
        &self,
        session: &mut SessionQuota,
        ty: QuotaType,
        principal: &Arc<KafkaPrincipal>,
        client_id: &str,
        value: f64,
    ) -> u64 {
        if !self.enabled(ty) {
            return 0;
        }
        let Some((sensor, bound)) = self.cached(session, ty, principal, client_id) else {
            return 0;
        };
        let now = self.now_ms();
        let t = sensor
            .rate
            .lock()
            .unwrap()
            .record_and_throttle(value, bound, now)
            .min(cap(ty, &self.config));
        if t > 0 {
            sensor.throttled_ms.fetch_add(t, Ordering::Relaxed);
        }
        t
    }

    /// Takes back a recorded value (Kafka unrecords the bytes of a fetch it
    /// answers empty because it is throttled).
    pub fn unrecord(
        &self,
        session: &mut SessionQuota,
        ty: QuotaType,
        principal: &Arc<KafkaPrincipal>,
        client_id: &str,
        value: f64,
    ) {
        if let Some((sensor, _)) = self.cached(session, ty, principal, client_id) {
            let now = self.now_ms();
            sensor.rate.lock().unwrap().record(-value, now);
        }
    }

    fn cached(
        &self,
        session: &mut SessionQuota,
        ty: QuotaType,
        principal: &Arc<KafkaPrincipal>,
        client_id: &str,
    ) -> Option<(Arc<Sensor>, f64)> {
        let generation = self.generation.load(Ordering::Acquire);
        let slot = &mut session.cache[ty.index()];
        match slot {
            Some(c)
                if c.generation == generation
                    && Arc::ptr_eq(&c.principal, principal)
                    && c.client_id == client_id => {}
            _ => {
                *slot = Some(Cached {
                    generation,
                    principal: principal.clone(),
                    client_id: client_id.to_string(),
                    sensor: self.lookup(ty, &principal.name, client_id),
                });
            }
        }
        slot.as_ref().and_then(|c| c.sensor.clone())
    }

    /// The controller mutation quota of a request's sender, if one applies.
    pub fn controller_mutation(&self, ctx: &RequestContext) -> Option<MutationQuota<'_>> {
        if !self.enabled(QuotaType::ControllerMutation) {
            return None;
        }
        let client_id = ctx.header.client_id.as_deref().unwrap_or("");
        let quotas = self.quotas.read().unwrap().clone();
        let (rate, key) = quotas.resolve(
            QuotaType::ControllerMutation,
            &ctx.principal.name,
            client_id,
        )?;
        Some(MutationQuota {
            manager: self,
            key,
            rate,
            throttle_ms: 0,
        })
    }

    /// Per sensor: the measured rate now and the total throttle time
    /// answered (ms), for `/metrics`.
    pub fn metric_series(&self) -> Vec<(SensorKey, f64, u64)> {
        let now = self.now_ms();
        let sensors: Vec<(SensorKey, Arc<Sensor>)> = self
            .sensors
            .lock()
            .unwrap()
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        sensors
            .into_iter()
            .map(|(k, s)| {
                let rate = s.rate.lock().unwrap().measure(now);
                (k, rate, s.throttled_ms.load(Ordering::Relaxed))
            })
            .collect()
    }
}

/// The `controller_mutation_rate` of one request (KIP-599).
pub struct MutationQuota<'a> {
    manager: &'a QuotaManager,
    key: SensorKey,
    rate: f64,
    throttle_ms: u64,
}

/// A mutation refused by a strict controller mutation quota: answer
/// THROTTLING_QUOTA_EXCEEDED for it.
#[derive(Debug, PartialEq, Eq)]
pub struct QuotaExceeded;

/// The KIP-599 error message.
pub const THROTTLING_QUOTA_EXCEEDED_MESSAGE: &str = "The throttling quota has been exceeded.";

impl MutationQuota<'_> {
    /// Accounts `partitions` mutations. In `strict` mode (CreateTopics v6+,
    /// CreatePartitions v3+, DeleteTopics v5+) a bucket already exceeded
    /// refuses them (`Err`: answer THROTTLING_QUOTA_EXCEEDED for this topic);
    /// otherwise they are taken even if that exceeds the quota.
    pub fn record(&mut self, partitions: u32, strict: bool) -> Result<(), QuotaExceeded> {
        self.record_at(partitions, strict, self.manager.now_ms())
    }

    fn record_at(
        &mut self,
        partitions: u32,
        strict: bool,
        now_ms: u64,
    ) -> Result<(), QuotaExceeded> {
        let c = &self.manager.config;
        let mut buckets = self.manager.buckets.lock().unwrap();
        let bucket = buckets.entry(self.key.clone()).or_insert_with(|| {
            TokenBucket::new(
                c.controller_window_num,
                c.controller_window_size_ms,
                self.rate,
                now_ms,
            )
        });
        if strict {
            let t = bucket.throttle(self.rate, now_ms);
            if t > 0 {
                self.throttle_ms = self.throttle_ms.max(t);
                return Err(QuotaExceeded);
            }
        }
        let t = bucket.record(partitions as f64, self.rate, now_ms);
        self.throttle_ms = self.throttle_ms.max(t);
        Ok(())
    }

    /// The throttle time to answer (ms).
    pub fn throttle_time_ms(&self) -> i32 {
        self.throttle_ms.min(i32::MAX as u64) as i32
    }
}

#[derive(Debug)]
struct Cached {
    generation: u64,
    principal: Arc<KafkaPrincipal>,
    client_id: String,
    sensor: Option<(Arc<Sensor>, f64)>,
}

/// Per-connection quota state, owned by [`crate::network::Session`]: the
/// cached resolution per quota type, and how long the connection is muted.
#[derive(Debug, Default)]
pub struct SessionQuota {
    cache: [Option<Cached>; 4],
    mute: Option<Duration>,
}

impl SessionQuota {
    /// The mute owed after the response just written (Kafka mutes the
    /// channel once the throttled response is sent); taken once.
    pub fn take_mute(&mut self) -> Option<Duration> {
        self.mute.take()
    }

    fn mute_for(&mut self, ms: u64) {
        if ms > 0 {
            let d = Duration::from_millis(ms);
            self.mute = Some(self.mute.map_or(d, |m| m.max(d)));
        }
    }
}

/// What a response exposes to quota enforcement; implemented for every
/// response type with a `throttle_time_ms` field. Types without it fall
/// back to no-op (see [`QuotaSlot`]).
pub trait QuotaResponse {
    /// The response's `throttle_time_ms`, if `version` has the field.
    fn throttle_time_ms(&mut self, version: i16) -> Option<&mut i32>;
    /// Bytes the consumer byte rate counts (Fetch: the response size).
    fn fetch_bytes(&self, _version: i16) -> usize {
        0
    }
    /// Drops the data of a throttled Fetch (Kafka answers it empty).
    fn clear_throttled(&mut self) {}
}

macro_rules! throttle_field {
    ($( $ty:ident from $min:literal; )*) => { $(
        impl QuotaResponse for kafka_protocol::messages::$ty {
            fn throttle_time_ms(&mut self, version: i16) -> Option<&mut i32> {
                (version >= $min).then_some(&mut self.throttle_time_ms)
            }
        }
    )* };
}

throttle_field! {
    ProduceResponse from 1;
    ListOffsetsResponse from 2;
    OffsetForLeaderEpochResponse from 2;
    MetadataResponse from 3;
    OffsetCommitResponse from 3;
    OffsetFetchResponse from 3;
    FindCoordinatorResponse from 1;
    JoinGroupResponse from 2;
    HeartbeatResponse from 1;
    LeaveGroupResponse from 1;
    SyncGroupResponse from 1;
    DescribeGroupsResponse from 1;
    ListGroupsResponse from 1;
    CreateTopicsResponse from 2;
    DeleteTopicsResponse from 1;
    DeleteRecordsResponse from 0;
    InitProducerIdResponse from 0;
    AddPartitionsToTxnResponse from 0;
    AddOffsetsToTxnResponse from 0;
    EndTxnResponse from 0;
    TxnOffsetCommitResponse from 0;
    DescribeConfigsResponse from 0;
    AlterConfigsResponse from 0;
    DescribeLogDirsResponse from 0;
    CreatePartitionsResponse from 0;
    DeleteGroupsResponse from 0;
    IncrementalAlterConfigsResponse from 0;
    OffsetDeleteResponse from 0;
    DescribeClientQuotasResponse from 0;
    AlterClientQuotasResponse from 0;
    DescribeClusterResponse from 0;
    DescribeProducersResponse from 0;
    DescribeTransactionsResponse from 0;
    ListTransactionsResponse from 0;
    DescribeTopicPartitionsResponse from 0;
    ConsumerGroupHeartbeatResponse from 0;
    ConsumerGroupDescribeResponse from 0;
    CreateAclsResponse from 0;
    DescribeAclsResponse from 0;
    DeleteAclsResponse from 0;
    DescribeUserScramCredentialsResponse from 0;
    AlterUserScramCredentialsResponse from 0;
}

impl QuotaResponse for kafka_protocol::messages::FetchResponse {
    fn throttle_time_ms(&mut self, version: i16) -> Option<&mut i32> {
        (version >= 1).then_some(&mut self.throttle_time_ms)
    }
    fn fetch_bytes(&self, version: i16) -> usize {
        use kafka_protocol::protocol::Encodable;
        self.compute_size(version).unwrap_or(0)
    }
    fn clear_throttled(&mut self) {
        // Kafka's throttled answer: no error, the session id, no partitions.
        self.responses.clear();
    }
}

impl<T: QuotaResponse> QuotaResponse for crate::handlers::ProduceReply<T> {
    fn throttle_time_ms(&mut self, version: i16) -> Option<&mut i32> {
        match self {
            crate::handlers::ProduceReply::Response(r) => r.throttle_time_ms(version),
            crate::handlers::ProduceReply::Deferred(r, _) => r.throttle_time_ms(version),
            _ => None,
        }
    }
}

/// Autoref specialization: `(&mut QuotaSlot(&mut reply)).quota_response()`
/// yields the reply as a [`QuotaResponse`] when its type is one, else
/// `None` — so a new API's handler needs no quota code to compile.
pub struct QuotaSlot<'a, T>(pub &'a mut T);

/// The specific case of [`QuotaSlot`].
pub trait ViaQuotaResponse {
    fn quota_response(&mut self) -> Option<&mut dyn QuotaResponse>;
}

impl<T: QuotaResponse> ViaQuotaResponse for QuotaSlot<'_, T> {
    fn quota_response(&mut self) -> Option<&mut dyn QuotaResponse> {
        Some(self.0)
    }
}

/// The fallback case of [`QuotaSlot`].
pub trait ViaNoQuotaResponse {
    fn quota_response(&mut self) -> Option<&'static mut dyn QuotaResponse>;
}

impl<T> ViaNoQuotaResponse for &mut QuotaSlot<'_, T> {
    fn quota_response(&mut self) -> Option<&'static mut dyn QuotaResponse> {
        None
    }
}

/// What a request exposes to quota enforcement before it is handled.
pub trait QuotaRequest {
    /// Lowers the response size the request asks for (Fetch `max_bytes`).
    fn cap_response_bytes(&mut self, max: i32);
    /// Whether a broker sent it (a follower's Fetch): client quotas do not
    /// apply to replication, which has quotas of its own in Kafka.
    fn is_from_replica(&self) -> bool;
}

impl QuotaRequest for kafka_protocol::messages::FetchRequest {
    fn cap_response_bytes(&mut self, max: i32) {
        self.max_bytes = self.max_bytes.min(max);
    }
    fn is_from_replica(&self) -> bool {
        self.replica_id.0 >= 0 || self.replica_state.replica_id.0 >= 0
    }
}

/// The specific case of [`QuotaSlot`] for requests.
pub trait ViaQuotaRequest {
    fn quota_request(&mut self) -> Option<&mut dyn QuotaRequest>;
}

impl<T: QuotaRequest> ViaQuotaRequest for QuotaSlot<'_, T> {
    fn quota_request(&mut self) -> Option<&mut dyn QuotaRequest> {
        Some(self.0)
    }
}

/// The fallback case of [`QuotaSlot`] for requests.
pub trait ViaNoQuotaRequest {
    fn quota_request(&mut self) -> Option<&'static mut dyn QuotaRequest>;
}

impl<T> ViaNoQuotaRequest for &mut QuotaSlot<'_, T> {
    fn quota_request(&mut self) -> Option<&'static mut dyn QuotaRequest> {
        None
    }
}

/// Before a request is handled: a Fetch under a consumer byte rate asks
/// for at most what the quota allows over its window (Kafka's
/// `getMaxValueInQuotaWindow`), so one response can never exceed what the
/// sensor can ever accept — it would be throttled, answered empty, for ever.
/// Returns whether the request is exempt from client quotas (replication).
pub fn prepare(
    broker: &crate::Broker,
    ctx: &RequestContext,
    session: &mut SessionQuota,
    request: Option<&mut dyn QuotaRequest>,
) -> bool {
    let q = &broker.quotas;
    let Some(request) = request else {
        return false;
    };
    if request.is_from_replica() {
        return true;
    }
    if !q.enabled(QuotaType::Fetch) {
        return false;
    }
    let client_id = ctx.header.client_id.as_deref().unwrap_or("");
    if let Some((_, bound)) = q.cached(session, QuotaType::Fetch, &ctx.principal, client_id) {
        let c = &q.config;
        let window_s = (c.window_num.max(2) - 1) as f64 * c.window_size_ms as f64 / 1000.0;
        let cap = (bound * window_s).clamp(1.0, i32::MAX as f64) as i32;
        request.cap_response_bytes(cap);
    }
    false
}

/// APIs the request quota never throttles (Kafka exempts those needed to
/// connect and authenticate).
fn request_quota_exempt(key: kafka_protocol::messages::ApiKey) -> bool {
    use kafka_protocol::messages::ApiKey;
    matches!(
        key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

/// Runs a handler future and, when `measure` is set, sums the time spent
/// inside its polls: the request quota counts work, not the wait of a
/// long-polling Fetch or a delayed Produce (Kafka counts thread time).
pub async fn timed<F: std::future::Future>(measure: bool, fut: F) -> (F::Output, u128) {
    let mut fut = std::pin::pin!(fut);
    let mut nanos = 0u128;
    let out = std::future::poll_fn(|cx| {
        if !measure {
            return fut.as_mut().poll(cx);
        }
        let t = Instant::now();
        let r = fut.as_mut().poll(cx);
        nanos += t.elapsed().as_nanos();
        r
    })
    .await;
    (out, nanos)
}

/// Kafka's request-time unit: % of one core for the window's seconds.
fn nanos_to_percentage(nanos: u128) -> f64 {
    nanos as f64 * 100.0 / 1e9
}

/// Accounts one handled request against the connection's quotas: Produce
/// bytes (`frame_len`), Fetch response bytes, handler time; sets the
/// response's `throttle_time_ms` to the largest throttle (keeping one the
/// handler set, e.g. KIP-599's) and mutes the connection for it. A
/// throttled Fetch is answered empty, its bytes unrecorded (Kafka).
#[allow(clippy::too_many_arguments)]
pub fn settle(
    broker: &crate::Broker,
    ctx: &RequestContext,
    session: &mut SessionQuota,
    key: kafka_protocol::messages::ApiKey,
    frame_len: usize,
    handler_nanos: u128,
    response: Option<&mut dyn QuotaResponse>,
) {
    use kafka_protocol::messages::ApiKey;
    let q = &broker.quotas;
    let version = ctx.version();
    let client_id = ctx.header.client_id.as_deref().unwrap_or("");
    let mut response = response;
    let handler_set = response
        .as_mut()
        .and_then(|r| r.throttle_time_ms(version).map(|t| *t))
        .unwrap_or(0)
        .max(0) as u64;
    let any = q.enabled(QuotaType::Produce)
        || q.enabled(QuotaType::Fetch)
        || q.enabled(QuotaType::Request);
    if !any && handler_set == 0 {
        return;
    }
    let request = if request_quota_exempt(key) {
        0
    } else {
        q.record(
            session,
            QuotaType::Request,
            &ctx.principal,
            client_id,
            nanos_to_percentage(handler_nanos),
        )
    };
    let bandwidth = match key {
        ApiKey::Produce => q.record(
            session,
            QuotaType::Produce,
            &ctx.principal,
            client_id,
            frame_len as f64,
        ),
        ApiKey::Fetch if q.enabled(QuotaType::Fetch) => {
            let bytes = response.as_ref().map_or(0, |r| r.fetch_bytes(version));
            let t = q.record(
                session,
                QuotaType::Fetch,
                &ctx.principal,
                client_id,
                bytes as f64,
            );
            if t > 0 || request > 0 {
                q.unrecord(
                    session,
                    QuotaType::Fetch,
                    &ctx.principal,
                    client_id,
                    bytes as f64,
                );
                if let Some(r) = response.as_mut() {
                    r.clear_throttled();
                }
            }
            t
        }
        ApiKey::Fetch if request > 0 => {
            // throttled by the request quota alone: answered empty too
            if let Some(r) = response.as_mut() {
                r.clear_throttled();
            }
            0
        }
        _ => 0,
    };
    let throttle = request.max(bandwidth).max(handler_set).min(i32::MAX as u64);
    if throttle == 0 {
        return;
    }
    if let Some(field) = response.as_mut().and_then(|r| r.throttle_time_ms(version)) {
        *field = throttle as i32;
    }
    session.mute_for(throttle);
}

/// Writes the quota sensors to `/metrics`: `strom_quota_rate` (the
/// measured rate: bytes/s, % of a core, partitions/s) and
/// `strom_quota_throttle_time_ms_total`, labelled like Kafka's quota
/// metrics (`user`, `client_id`, empty when the quota is not per that
/// component). Nothing is written while no quota was ever enforced.
pub fn encode_metrics(
    broker: &crate::Broker,
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::metrics::MetricType;
    let series = broker.quotas.metric_series();
    if series.is_empty() {
        return Ok(());
    }
    let labels = |k: &SensorKey| -> Vec<(&'static str, String)> {
        vec![
            ("quota_type", format!("{:?}", k.quota_type)),
            ("user", k.user.clone()),
            ("client_id", k.client_id.clone()),
        ]
    };
    {
        let mut e = encoder.encode_descriptor(
            "strom_quota_rate",
            "Measured rate of a quota sensor over its window",
            None,
            MetricType::Gauge,
        )?;
        for (k, rate, _) in &series {
            ConstGauge::new(*rate).encode(e.encode_family(&labels(k))?)?;
        }
    }
    let mut e = encoder.encode_descriptor(
        "strom_quota_throttle_time_ms",
        "Throttle time answered to clients of a quota sensor",
        None,
        MetricType::Counter,
    )?;
    for (k, _, throttled) in &series {
        ConstCounter::new(*throttled).encode(e.encode_family(&labels(k))?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(entries: &[(Option<EntityName>, Option<EntityName>, &str, f64)]) -> ClientQuotas {
        let mut q = ClientQuotas::default();
        for (u, c, k, v) in entries {
            q.apply(
                &QuotaEntity {
                    user: u.clone(),
                    client_id: c.clone(),
                },
                &[QuotaOp {
                    key: k.to_string(),
                    value: Some(*v),
                }],
            );
        }
        q
    }

    fn n(s: &str) -> Option<EntityName> {
        Some(EntityName::Name(s.into()))
    }
    const D: Option<EntityName> = Some(EntityName::Default);
    const P: &str = "producer_byte_rate";

    #[test]
    fn resolution_follows_kafkas_order() {
        // Every level configured with a distinct value; remove them most
        // specific first and check the next one takes over.
        let levels = [
            (n("u"), n("c"), 1.0, ("u", "c")),
            (n("u"), D, 2.0, ("u", "c")),
            (n("u"), None, 3.0, ("u", "")),
            (D, n("c"), 4.0, ("u", "c")),
            (D, D, 5.0, ("u", "c")),
            (D, None, 6.0, ("u", "")),
            (None, n("c"), 7.0, ("", "c")),
            (None, D, 8.0, ("", "c")),
        ];
        let mut q = quotas(
            &levels
                .iter()
                .map(|(u, c, v, _)| (u.clone(), c.clone(), P, *v))
                .collect::<Vec<_>>(),
        );
        for (u, c, v, (tu, tc)) in levels.iter() {
            let (bound, key) = q.resolve(QuotaType::Produce, "u", "c").unwrap();
            assert_eq!(bound, *v);
            assert_eq!((key.user.as_str(), key.client_id.as_str()), (*tu, *tc));
            // another type is not affected
            assert!(q.resolve(QuotaType::Fetch, "u", "c").is_none());
            q.apply(
                &QuotaEntity {
                    user: u.clone(),
                    client_id: c.clone(),
                },
                &[QuotaOp {
                    key: P.into(),
                    value: None,
                }],
            );
        }
        assert!(q.is_empty());
        assert!(q.resolve(QuotaType::Produce, "u", "c").is_none());
    }

    #[test]
    fn a_quota_for_another_name_does_not_apply() {
        let q = quotas(&[(n("alice"), None, P, 10.0), (None, n("app"), P, 20.0)]);
        assert!(q.resolve(QuotaType::Produce, "bob", "other").is_none());
        assert_eq!(q.resolve(QuotaType::Produce, "bob", "app").unwrap().0, 20.0);
        assert_eq!(
            q.resolve(QuotaType::Produce, "alice", "app").unwrap().0,
            10.0
        );
    }

    #[test]
    fn rate_uses_at_least_samples_minus_one_windows() {
        let mut r = Rate::new(11, 1000);
        r.record(10_000.0, 0);
        // young sensor: 10 full windows assumed
        assert_eq!(r.window_size_ms(0), 10_000);
        assert!((r.measure(0) - 1000.0).abs() < 1e-9);
        // 500 ms into the second window: elapsed 1500 → 1 full, pad 9
        r.record(0.0, 1500);
        assert_eq!(r.window_size_ms(1500), 1500 + 9 * 1000);
    }

    #[test]
    fn throttle_is_excess_over_quota_times_window() {
        let mut r = Rate::new(11, 1000);
        // 20 000 units against 1000/s over a 10 s window: rate 2000,
        // (2000 − 1000) / 1000 × 10 000 ms = 10 000 ms.
        assert_eq!(r.record_and_throttle(20_000.0, 1000.0, 0), 10_000);
        // within the quota: no throttle
        let mut r = Rate::new(11, 1000);
        assert_eq!(r.record_and_throttle(9_000.0, 1000.0, 0), 0);
    }

    #[test]
    fn old_samples_expire() {
        let mut r = Rate::new(3, 1000);
        r.record(3000.0, 0);
        assert!(r.measure(100) > 0.0);
        // after samples × window every old sample is reset
        assert_eq!(r.measure(3000), 0.0);
    }

    #[test]
    fn a_steady_sender_converges_to_the_quota() {
        // A client that sends 100 KB whenever it is not throttled, against
        // 1 MB/s: over 60 s it averages about 1 MB/s.
        let quota = 1_000_000.0;
        let mut r = Rate::new(11, 1000);
        let (mut t, mut sent) = (0u64, 0.0);
        while t < 60_000 {
            sent += 100_000.0;
            let throttle = r.record_and_throttle(100_000.0, quota, t);
            t += 10 + throttle;
        }
        let rate = sent / (t as f64 / 1000.0);
        assert!((0.9e6..1.15e6).contains(&rate), "rate {rate}");
    }

    #[test]
    fn idle_sensors_nobody_caches_expire_when_another_is_created() {
        let m = QuotaManager::new(QuotaConfig::default(), &ClientQuotas::default());
        let held = m.sensor(SensorKey::new(QuotaType::Produce, "", "held"));
        m.sensor(SensorKey::new(QuotaType::Produce, "", "idle"))
            .rate
            .lock()
            .unwrap()
            .record(1.0, m.now_ms());
        // pretend an hour passed for both (records are in the past)
        for s in m.sensors.lock().unwrap().values() {
            let mut r = s.rate.lock().unwrap();
            r.last_record_ms = 0;
        }
        let mut m2 = m;
        m2.epoch -= Duration::from_millis(SENSOR_EXPIRY_MS);
        m2.sensor(SensorKey::new(QuotaType::Produce, "", "new"));
        let keys: Vec<String> = m2
            .sensors
            .lock()
            .unwrap()
            .keys()
            .map(|k| k.client_id.clone())
            .collect();
        assert!(keys.contains(&"held".to_string()) && keys.contains(&"new".to_string()));
        assert!(!keys.contains(&"idle".to_string()), "{keys:?}");
        drop(held);
    }

    #[test]
    fn token_bucket_kip599() {
        // 10 partitions/s, burst 11 × 1 s = 110 tokens
        let mut b = TokenBucket::new(11, 1000, 10.0, 0);
        assert_eq!(b.record(100.0, 10.0, 0), 0);
        // 20 over: 2 s
        assert_eq!(b.record(30.0, 10.0, 0), 2000);
        assert_eq!(b.throttle(10.0, 1000), 1000);
        assert_eq!(b.throttle(10.0, 2000), 0);
        // refill caps at the burst
        assert_eq!(b.record(110.0, 10.0, 1_000_000), 0);
        assert_eq!(b.record(1.0, 10.0, 1_000_000), 100);
    }

    #[test]
    fn strict_mutation_quota_refuses_once_exceeded() {
        let q = quotas(&[(None, D, "controller_mutation_rate", 1.0)]);
        let m = QuotaManager::new(QuotaConfig::default(), &q);
        let mut mq = MutationQuota {
            manager: &m,
            key: SensorKey::new(QuotaType::ControllerMutation, "", "c"),
            rate: 1.0,
            throttle_ms: 0,
        };
        // burst of 11: the first topic of 20 partitions is taken (the
        // bucket was not exceeded), the next is refused
        assert_eq!(mq.record_at(20, true, 0), Ok(()));
        assert_eq!(mq.record_at(1, true, 0), Err(QuotaExceeded));
        assert_eq!(mq.throttle_time_ms(), 9000);
        // permissive mode takes it anyway
        assert_eq!(mq.record_at(1, false, 0), Ok(()));
        assert_eq!(mq.throttle_time_ms(), 10_000);
    }

    #[test]
    fn validation_of_ops() {
        let op = |k: &str, v: Option<f64>| QuotaOp {
            key: k.into(),
            value: v,
        };
        assert!(ClientQuotas::validate(&[
            op(P, Some(1024.0)),
            op("request_percentage", Some(12.5))
        ])
        .is_ok());
        assert!(ClientQuotas::validate(&[op("bogus", Some(1.0))])
            .unwrap_err()
            .contains("Invalid configuration key"));
        assert!(ClientQuotas::validate(&[op(P, Some(-1.0))]).is_err());
        assert!(ClientQuotas::validate(&[op(P, Some(1.5))])
            .unwrap_err()
            .contains("integer"));
        assert!(ClientQuotas::validate(&[op(P, Some(f64::NAN))]).is_err());
        assert!(ClientQuotas::validate(&[op(P, Some(1.0)), op(P, None)]).is_err());
        assert!(ClientQuotas::validate(&[op(P, None)]).is_ok());
    }

    #[test]
    fn entity_components() {
        let e = QuotaEntity::from_components([(USER, Some("u")), (CLIENT_ID, None)]).unwrap();
        assert_eq!(e.user, n("u"));
        assert_eq!(e.client_id, D);
        assert!(QuotaEntity::from_components([(USER, Some("u")), (USER, None)]).is_err());
        assert!(QuotaEntity::from_components([("group", Some("g"))]).is_err());
        assert!(QuotaEntity::from_components(std::iter::empty()).is_err());
    }

    #[test]
    fn describe_filters() {
        let q = quotas(&[
            (n("u"), None, P, 1.0),
            (D, None, P, 2.0),
            (n("u"), n("c"), P, 3.0),
            (None, n("c"), P, 4.0),
        ]);
        let vals = |f: QuotaFilter| -> Vec<f64> {
            let mut v: Vec<f64> = q.matching(&f).map(|(_, v)| v[P]).collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v
        };
        let f = |c: Vec<(&str, i8, Option<&str>)>, strict| QuotaFilter::new(c, strict).unwrap();
        assert_eq!(
            vals(f(vec![(USER, MATCH_TYPE_EXACT, Some("u"))], false)),
            vec![1.0, 3.0]
        );
        assert_eq!(
            vals(f(vec![(USER, MATCH_TYPE_EXACT, Some("u"))], true)),
            vec![1.0]
        );
        assert_eq!(
            vals(f(vec![(USER, MATCH_TYPE_DEFAULT, None)], false)),
            vec![2.0]
        );
        assert_eq!(
            vals(f(vec![(USER, MATCH_TYPE_SPECIFIED, None)], true)),
            vec![1.0, 2.0]
        );
        assert_eq!(
            vals(f(vec![(CLIENT_ID, MATCH_TYPE_SPECIFIED, None)], false)),
            vec![3.0, 4.0]
        );
        assert_eq!(vals(f(vec![], false)), vec![1.0, 2.0, 3.0, 4.0]);
        assert!(matches!(
            QuotaFilter::new([(USER, MATCH_TYPE_EXACT, None)], false),
            Err(FilterError::Invalid(_))
        ));
        assert!(matches!(
            QuotaFilter::new([("topic", MATCH_TYPE_SPECIFIED, None)], false),
            Err(FilterError::Unsupported(_))
        ));
        assert!(matches!(
            QuotaFilter::new([(USER, 7, None)], false),
            Err(FilterError::Unsupported(_))
        ));
        assert!(matches!(
            QuotaFilter::new(
                [
                    (USER, MATCH_TYPE_SPECIFIED, None),
                    (USER, MATCH_TYPE_DEFAULT, None)
                ],
                false
            ),
            Err(FilterError::Invalid(_))
        ));
    }

    #[test]
    fn client_quotas_round_trip_as_json() {
        let q = quotas(&[
            (n("u"), D, P, 1.0),
            (None, n("c"), "request_percentage", 50.0),
        ]);
        let s = serde_json::to_string(&q).unwrap();
        let back: ClientQuotas = serde_json::from_str(&s).unwrap();
        assert_eq!(back, q);
    }

    #[test]
    fn sessions_share_an_entitys_sensor_and_see_changes() {
        let q = quotas(&[(None, n("c"), P, 1000.0)]);
        let m = QuotaManager::new(QuotaConfig::default(), &q);
        let p = Arc::new(KafkaPrincipal::anonymous());
        let (mut s1, mut s2) = (SessionQuota::default(), SessionQuota::default());
        assert_eq!(m.record(&mut s1, QuotaType::Produce, &p, "c", 5000.0), 0);
        // the second connection adds to the same sensor: 15 000 / 10 s
        assert!(m.record(&mut s2, QuotaType::Produce, &p, "c", 10_000.0) > 0);
        assert_eq!(m.record(&mut s1, QuotaType::Produce, &p, "other", 1e9), 0);
        // raising the quota is seen at once by the cached session
        let q = quotas(&[(None, n("c"), P, 1e9)]);
        m.update(&q);
        assert_eq!(m.record(&mut s1, QuotaType::Produce, &p, "c", 1.0), 0);
        m.update(&ClientQuotas::default());
        assert!(!m.enabled(QuotaType::Produce));
    }
}
