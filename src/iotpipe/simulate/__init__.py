"""Simulated devices: realistic signals per sensor type, anomaly injection, and MQTT publishing.

One module per concern: :mod:`~iotpipe.simulate.signals` (the signal model), :mod:`~iotpipe.simulate.plan` (options
and the messages, a pure function of them and ``seed``), :mod:`~iotpipe.simulate.certificates` (registered devices'
TLS files), :mod:`~iotpipe.simulate.mqtt` (the transport) and :mod:`~iotpipe.simulate.runner` (sending a plan).
"""

from iotpipe.simulate.certificates import DeviceCredentials, load_cert_dir, with_login
from iotpipe.simulate.mqtt import BrokerTarget, MqttPublisher, Publisher, PublishError, parse_broker_url
from iotpipe.simulate.plan import (
    FORMATS,
    MAX_DEVICES,
    MAX_DURATION_S,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGES,
    MAX_RATE_HZ,
    MAX_READINGS_PER_MESSAGE,
    SimMessage,
    SimPlan,
    build_plan,
    ground_truth,
    messages,
    simulated_device_ids,
    write_ground_truth,
)
from iotpipe.simulate.runner import SimSummary, run, run_simulation
from iotpipe.simulate.signals import FAILURES, SignalModel, anomalous_value, normal_band

__all__ = [
    "FAILURES",
    "FORMATS",
    "MAX_DEVICES",
    "MAX_DURATION_S",
    "MAX_MESSAGES",
    "MAX_MESSAGE_BYTES",
    "MAX_RATE_HZ",
    "MAX_READINGS_PER_MESSAGE",
    "BrokerTarget",
    "DeviceCredentials",
    "MqttPublisher",
    "PublishError",
    "Publisher",
    "SignalModel",
    "SimMessage",
    "SimPlan",
    "SimSummary",
    "anomalous_value",
    "build_plan",
    "ground_truth",
    "load_cert_dir",
    "messages",
    "normal_band",
    "parse_broker_url",
    "run",
    "run_simulation",
    "simulated_device_ids",
    "with_login",
    "write_ground_truth",
]
