//! The simulator against the real local Mosquitto (127.0.0.1:1883): every
//! device speaks, and a BP cuff answers `remeasure`. Each run has its own
//! topic root and client ids, so runs in parallel do not meet.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Content, Metric, StatusField, StatusValue};
use vaka_gateway::topics::{Channel, DeviceId, ParsedTopic, TopicRoot};
use vaka_gateway::validate::{Limits, validate};
use vaka_sim::{DeviceKind, SimConfig, Timing, roster, run_with};

const BROKER: &str = "127.0.0.1";
const PORT: u16 = 1883;

/// A plain subscriber to `{root}/#` that hands every message to a channel.
async fn subscriber(root: &str) -> anyhow::Result<(AsyncClient, Inbox, JoinHandle<()>)> {
    let mut opts = MqttOptions::new(format!("{root}-watch"), BROKER, PORT);
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    client
        .subscribe(format!("{root}/#"), QoS::AtLeastOnce)
        .await?;
    let (tx, rx) = mpsc::channel(4096);
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        let mut disconnecting = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // Never wait on the inbox: the poll loop must keep going
                    // (and flush our own publishes) even if nobody reads.
                    if !disconnecting {
                        let _ = tx.try_send((p.topic.clone(), p.payload.to_vec()));
                    }
                }
                // Read on until the broker closes: closing a socket with
                // unread data sends a reset, and the broker may then drop
                // what we sent last.
                Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnecting = true,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), subscribed_rx)
        .await
        .context("no SUBACK from Mosquitto at 127.0.0.1:1883 (is it running?)")??;
    Ok((client, rx, task))
}

type Inbox = mpsc::Receiver<(String, Vec<u8>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_speaks_and_a_cuff_answers_remeasure() -> anyhow::Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let root_name = format!("test-sim-{}", &id[..12]);
    let root = TopicRoot::new(&root_name)?;
    let (watch, mut inbox, watcher) = subscriber(&root_name).await?;

    let r = roster(7, 3);
    let config = SimConfig {
        mqtt_url: format!("mqtt://{BROKER}:{PORT}"),
        topic_root: root_name.clone(),
        seed: 7,
        history_days: 2,
        client_prefix: root_name.clone(),
        credentials: Default::default(),
    };
    let timing = Timing {
        remeasure_delay: Duration::from_millis(500),
        ..Timing::default()
    };
    let shutdown = CancellationToken::new();
    let sim = {
        let (r, shutdown) = (r.clone(), shutdown.clone());
        tokio::spawn(async move { run_with(&r, config, timing, shutdown).await })
    };

    let outcome = speak_and_remeasure(&root, &r, &watch, &mut inbox).await;
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(10), sim).await;
    let goodbye = if outcome.is_ok() {
        all_say_offline(&root, &r, &mut inbox).await
    } else {
        Ok(())
    };
    // Whatever happened, leave no retained status on the shared broker.
    for (_, d) in r.devices() {
        let id = DeviceId::parse(&d.id).context("valid id")?;
        watch
            .publish(
                root.topic(&id, Channel::Status),
                QoS::AtLeastOnce,
                true,
                Vec::new(),
            )
            .await?;
    }
    // disconnect() only queues the request: wait until the poll loop has
    // sent everything before it, or the runtime ends with them unsent.
    watch.disconnect().await?;
    tokio::time::timeout(Duration::from_secs(5), watcher).await??;
    outcome?;
    goodbye?;

    let report = report.context("the simulator did not stop")???;
    assert_eq!(report.replies, 1);
    assert!(report.history > 0);
    assert!(report.acked > 0 && report.acked <= report.published);
    for kind in [
        DeviceKind::Scale,
        DeviceKind::BpCuff,
        DeviceKind::FetalMonitor,
        DeviceKind::Dispenser,
        DeviceKind::FallSensor,
    ] {
        assert!(
            report.by_kind.get(&kind).copied().unwrap_or(0) > 0,
            "{kind}"
        );
    }
    Ok(())
}

/// Every device says "online" and the daily devices send history; then the
/// first cuff, told to `remeasure`, sends a new reading taken after the
/// command.
async fn speak_and_remeasure(
    root: &TopicRoot,
    r: &vaka_sim::Roster,
    watch: &AsyncClient,
    inbox: &mut Inbox,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let all: HashSet<String> = r.devices().map(|(_, d)| d.id.clone()).collect();
    let with_history: HashSet<String> = r
        .devices()
        .filter(|(_, d)| {
            matches!(
                d.kind,
                DeviceKind::Scale | DeviceKind::BpCuff | DeviceKind::Dispenser
            )
        })
        .map(|(_, d)| d.id.clone())
        .collect();
    let mut online = HashSet::new();
    let mut data = HashSet::new();
    while online != all || !with_history.is_subset(&data) {
        let Ok(Some((topic, payload))) = timeout_at(deadline, inbox.recv()).await else {
            bail!("timed out: online {online:?}, data {data:?} of {all:?}");
        };
        let ParsedTopic::Device(dev, channel) = root.parse(&topic) else {
            bail!("unexpected topic {topic}");
        };
        if channel == Channel::Cmd {
            continue;
        }
        let verdict = validate(
            &dev,
            channel,
            &payload,
            UnixMillis::now(),
            &Limits::default(),
        );
        let accepted = verdict
            .outcome
            .map_err(|e| anyhow::anyhow!("{topic}: {e}: {}", String::from_utf8_lossy(&payload)))?;
        match accepted.content {
            Content::Status(fields) => {
                let is_online = fields.iter().any(|s| {
                    s.field == StatusField::Conn && s.value == StatusValue::Text("online".into())
                });
                if is_online {
                    online.insert(dev.to_string());
                }
            }
            _ => {
                data.insert(dev.to_string());
            }
        }
    }

    let cuff = r
        .devices()
        .find(|(_, d)| d.kind == DeviceKind::BpCuff)
        .map(|(_, d)| d.id.clone())
        .context("a BP cuff in the roster")?;
    let cuff_id = DeviceId::parse(&cuff).context("valid id")?;
    let asked = UnixMillis::now();
    watch
        .publish(
            root.topic(&cuff_id, Channel::Cmd),
            QoS::AtLeastOnce,
            false,
            r#"{"cmd":"remeasure","name":"bp","reason":"test"}"#,
        )
        .await?;
    let obs_topic = root.topic(&cuff_id, Channel::Obs);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let Ok(Some((topic, payload))) = timeout_at(deadline, inbox.recv()).await else {
            bail!("no new reading from {cuff} after remeasure");
        };
        if topic != obs_topic {
            continue;
        }
        let verdict = validate(
            &cuff_id,
            Channel::Obs,
            &payload,
            UnixMillis::now(),
            &Limits::default(),
        );
        let Ok(accepted) = verdict.outcome else {
            continue;
        };
        let Content::Observations(o) = accepted.content else {
            continue;
        };
        if o.iter().any(|o| o.metric == Metric::Sys && o.time >= asked) {
            assert!(o.iter().any(|o| o.metric == Metric::Hr));
            return Ok(());
        }
    }
}

/// On the way out every device says "offline" (retained).
async fn all_say_offline(
    root: &TopicRoot,
    r: &vaka_sim::Roster,
    inbox: &mut Inbox,
) -> anyhow::Result<()> {
    let all: HashSet<String> = r.devices().map(|(_, d)| d.id.clone()).collect();
    let mut offline = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while offline != all {
        let Ok(Some((topic, payload))) = timeout_at(deadline, inbox.recv()).await else {
            bail!("offline only from {offline:?}");
        };
        if let ParsedTopic::Device(dev, Channel::Status) = root.parse(&topic)
            && String::from_utf8_lossy(&payload).contains(r#""vs":"offline""#)
        {
            offline.insert(dev.to_string());
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_broker_that_is_not_there_is_a_clear_error() -> anyhow::Result<()> {
    // A port nobody listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = SimConfig {
        mqtt_url: format!("mqtt://127.0.0.1:{port}"),
        ..SimConfig::default()
    };
    let err = run_with(
        &roster(1, 1),
        config,
        Timing::default(),
        CancellationToken::new(),
    )
    .await
    .expect_err("no broker");
    let text = err.to_string();
    assert!(text.contains("could not connect"), "{text}");
    assert!(text.contains(&port.to_string()), "{text}");

    let config = SimConfig {
        mqtt_url: "mqtts://127.0.0.1".into(),
        ..SimConfig::default()
    };
    let err = run_with(
        &roster(1, 1),
        config,
        Timing::default(),
        CancellationToken::new(),
    )
    .await;
    assert!(matches!(err, Err(vaka_sim::Error::MqttUrl { .. })));
    Ok(())
}
