#!/usr/bin/python3
"""docker-py (the Docker SDK for Python) against tetherd: one flow over a loaded image, a container run
attached, a detached one driven through logs, attach, exec, archives, kill, restart, stop and remove, and the
events those left. Prints one JSON object, a key per step: {"ok": true, ...facts} or {"ok": false, "error"}.
test/e2e/clients.test.ts runs it and asserts on the facts; a failed step does not stop the later ones.

usage: sdk_flow.py unix:///path/to/tetherd.sock path/to/busybox-image.tar
"""
import io
import json
import sys
import tarfile
import time
import traceback

import docker

BASE_URL, IMAGE_TAR = sys.argv[1], sys.argv[2]
IMAGE = 'tether/busybox:latest'
# One line every 0.3 s, numbered, until killed.
TICKER = 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.3; done'

results = {}


def step(name):
    """Runs the decorated function now and records its facts (or its error) under `name`."""

    def run(fn):
        started = time.time()
        try:
            facts = fn() or {}
            results[name] = {'ok': True, **facts}
        except Exception as error:  # a failed step is a fact to report, not the end of the flow
            results[name] = {
                'ok': False,
                'error': f'{type(error).__name__}: {error}',
                'trace': traceback.format_exc(limit=4),
            }
        results[name]['seconds'] = round(time.time() - started, 2)
        return fn

    return run


def text(data):
    return data.decode('utf-8', 'replace') if isinstance(data, bytes) else str(data)


def read_until(chunks, needle, limit=200):
    """Reads a generator of byte chunks until `needle(all bytes so far)` holds, or `limit` chunks."""
    seen = b''
    for _ in range(limit):
        seen += next(chunks)
        if needle(seen):
            break
    return seen


def wait_for(probe, what, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f'timed out after {seconds} s waiting for {what}')


client = docker.DockerClient(base_url=BASE_URL, timeout=120)
t0 = int(time.time())


@step('version')
def _():
    auto = docker.DockerClient(base_url=BASE_URL, version='auto')
    return {
        'sdk': docker.__version__,
        'default_api': client.api.api_version,
        'auto_api': auto.api.api_version,
        'ping': client.ping(),
        'server_api': client.version()['ApiVersion'],
    }


@step('load')
def _():
    with open(IMAGE_TAR, 'rb') as tar:
        images = client.images.load(tar.read())
    image = client.images.get(IMAGE)
    return {'tags': [tag for i in images for tag in i.tags], 'id': image.id}


@step('run_attached')
def _():
    output = client.containers.run(
        IMAGE,
        ['sh', '-c', 'echo out-line; echo err-line >&2'],
        name='sdk-once',
        stdout=True,
        stderr=True,
        remove=True,
    )
    gone = not client.containers.list(all=True, filters={'name': 'sdk-once'})
    return {'output': text(output), 'type': type(output).__name__, 'removed': gone}


svc = None


@step('run_detached')
def _():
    global svc
    svc = client.containers.run(
        IMAGE,
        ['sh', '-c', TICKER],
        detach=True,
        name='sdk-svc',
        environment={'FOO': 'from-run'},
        labels={'tether.test': 'sdk'},
    )
    svc.reload()
    return {'id': svc.id, 'status': svc.status, 'name': svc.name, 'env': svc.attrs['Config']['Env']}


@step('list')
def _():
    every = [c.name for c in client.containers.list(all=True)]
    labeled = [c.name for c in client.containers.list(filters={'label': 'tether.test=sdk'})]
    return {'all': every, 'labeled': labeled}


@step('inspect')
def _():
    info = client.api.inspect_container('sdk-svc')
    return {
        'name': info['Name'],
        'running': info['State']['Running'],
        'cmd': info['Config']['Cmd'],
        'labels': info['Config']['Labels'],
    }


@step('logs')
def _():
    wait_for(lambda: b'tick 3' in svc.logs(), 'tick 3 in the logs')
    logs = text(svc.logs())
    tail = text(svc.logs(tail=2))
    stamped = text(svc.logs(timestamps=True, tail=1))
    return {'logs': logs, 'tail': tail, 'stamped': stamped}


@step('logs_follow')
def _():
    stream = svc.logs(stream=True, follow=True, tail=0)
    seen = read_until(stream, lambda b: b.count(b'tick') >= 3)
    stream.close()
    return {'followed': text(seen)}


@step('attach')
def _():
    stream = svc.attach(stream=True, logs=False)
    seen = read_until(stream, lambda b: b.count(b'tick') >= 2)
    stream.close()
    return {'attached': text(seen)}


@step('exec_run')
def _():
    plain = svc.exec_run(
        ['sh', '-c', 'echo "$FOO $BAR"; pwd; id -u'],
        environment={'BAR': 'from-exec'},
        workdir='/tmp',
        user='nobody',
    )
    failing = svc.exec_run(['sh', '-c', 'echo to-err >&2; exit 3'])
    out, err = svc.exec_run(['sh', '-c', 'echo to-out; echo to-err >&2'], demux=True).output
    streamed = b''.join(svc.exec_run(['sh', '-c', 'echo a; sleep 0.2; echo b'], stream=True).output)
    return {
        'exit_code': plain.exit_code,
        'output': text(plain.output),
        'failing_exit_code': failing.exit_code,
        'failing_output': text(failing.output),
        'demux': [text(out), text(err)],
        'streamed': text(streamed),
    }


@step('archive')
def _():
    payload = b'put through docker-py\n'
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as tar:
        info = tarfile.TarInfo('sdk-put.txt')
        info.size = len(payload)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    put = svc.put_archive('/tmp', buffer.getvalue())
    cat = svc.exec_run(['cat', '/tmp/sdk-put.txt'])
    bits, stat = svc.get_archive('/tmp/sdk-put.txt')
    with tarfile.open(fileobj=io.BytesIO(b''.join(bits))) as tar:
        members = tar.getnames()
        got = tar.extractfile('sdk-put.txt').read()
    return {
        'put': put,
        'cat': text(cat.output),
        'stat': {'name': stat['name'], 'size': stat['size']},
        'members': members,
        'content': text(got),
    }


@step('top')
def _():
    top = svc.top()
    return {'titles': top['Titles'], 'processes': top['Processes']}


@step('kill_wait')
def _():
    svc.kill()
    status = svc.wait(timeout=60)
    svc.reload()
    return {'wait': status, 'status': svc.status, 'exit_code': svc.attrs['State']['ExitCode']}


@step('restart')
def _():
    svc.restart(timeout=2)
    svc.reload()
    running = svc.status
    # Both boots' output is in the one log.
    wait_for(lambda: svc.logs().count(b'tick 1\n') >= 2, 'the restarted boot to tick')
    return {'status': running, 'tick0_count': svc.logs().count(b'tick 0\n')}


@step('stop')
def _():
    svc.stop(timeout=2)
    status = svc.wait(timeout=60)
    svc.reload()
    return {'wait': status, 'status': svc.status}


@step('remove')
def _():
    svc.remove()
    try:
        client.containers.get('sdk-svc')
        gone = False
    except docker.errors.NotFound:
        gone = True
    return {'gone': gone}


@step('not_found')
def _():
    try:
        client.containers.get('no-such-container')
        return {'raised': None}
    except docker.errors.NotFound as error:
        return {'raised': 'NotFound', 'status': error.status_code}


@step('events')
def _():
    events = list(client.events(since=t0, until=int(time.time()) + 1, decode=True))
    mine = [e['Action'] for e in events if e.get('Actor', {}).get('Attributes', {}).get('name') == 'sdk-svc']
    once = [e['Action'] for e in events if e.get('Actor', {}).get('Attributes', {}).get('name') == 'sdk-once']
    return {'svc': mine, 'once': once, 'types': sorted({e['Type'] for e in events})}


print(json.dumps(results, indent=1))
