# Drives the firmware's MQTT client (firmware/kiosk/mqtt.py) under the
# MicroPython unix port for tests/test_mqtt_client.py. Configured through the
# environment; prints one event per line:
#   up <session present 0/1> | down <reason> | puback <pid> | msg <topic> <payload>
#   | sent <n> | done
# Keeps reconnecting (200 ms after a drop), publishes MQTT_COUNT messages
# "m<i>" QoS 1 on MQTT_TOPIC one every MQTT_EVERY_MS (only while up and
# publish() accepts), subscribes MQTT_SUB at each connect, and exits after
# every message is PUBACKed and MQTT_LINGER_MS more, or after MQTT_MAX_MS.

import os
import sys
import time

from kiosk import mqtt as mqttc


def env(name, default=None):
    v = os.getenv(name)
    return v if v is not None else default


tls = None
if env("MQTT_CA"):
    tls = {"ca": env("MQTT_CA"), "cert": env("MQTT_CERT"), "key": env("MQTT_KEY")}
client = mqttc.MQTTClient(
    env("MQTT_ID", "kiosk-drv"), "127.0.0.1", int(env("MQTT_PORT")),
    user=env("MQTT_USER"), password=env("MQTT_PASSWORD"),
    keepalive=int(env("MQTT_KEEPALIVE", "5")),
    will_topic=env("MQTT_WILL"), will_msg=b"offline", tls=tls)
count = int(env("MQTT_COUNT", "0"))
every = int(env("MQTT_EVERY_MS", "50"))
topic = env("MQTT_TOPIC", "kiosk/kiosk-drv/checkin")
sub = env("MQTT_SUB")
status = env("MQTT_WILL")
acked = set()
sent = 0
retry_at = time.ticks_ms()
last_pub = time.ticks_ms()
start = time.ticks_ms()
done_at = None


def say(*parts):
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    if hasattr(sys.stdout, "flush"):
        sys.stdout.flush()  # a pipe: the test reads events as they happen


def on_connect():
    say("up", 1 if client.session_present else 0)
    if sub:
        client.subscribe(sub, 1)
    if status:
        client.publish(status, b"online", 1, True)


def on_down(reason):
    global retry_at
    say("down", reason)
    retry_at = time.ticks_add(time.ticks_ms(), 200)


client.on_connect = on_connect
client.on_down = on_down
client.on_puback = lambda pid: acked.add(pid)
client.on_message = lambda t, p: say("msg", t, str(p, "utf-8"))
pids = {}
while True:
    now = time.ticks_ms()
    if time.ticks_diff(now, start) > int(env("MQTT_MAX_MS", "30000")):
        say("timeout")
        sys.exit(2)
    if client.state == mqttc.DOWN:
        if time.ticks_diff(now, retry_at) >= 0:
            client.start(now)
    else:
        client.service(now)
        if client.state == mqttc.UP and sent < count \
                and time.ticks_diff(now, last_pub) >= every:
            pid = client.publish(topic, b"m%d" % sent, 1)
            if pid:
                pids[pid] = sent
                sent += 1
                last_pub = now
                say("sent", sent)
    if count and len(acked) >= count and done_at is None:
        done_at = now
    if done_at is not None and time.ticks_diff(now, done_at) > int(env("MQTT_LINGER_MS", "0")):
        say("done")
        sys.exit(0)
    time.sleep_ms(5)
