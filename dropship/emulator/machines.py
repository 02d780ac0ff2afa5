"""What plays a droplet: a container from the stock image (the default), or a local process machine.

Container droplets are separate machines: their own `/` from the image (the
stock `debian-12-x64` or a snapshot), nothing of dropship or Prefect, and
their own network namespace with only a loopback interface (`--network
none`): `dropship.emulator.network` relays the droplet's address (as the API
reports it) to its sshd, and the published names (`Internet`: Debian's
mirror, PyPI, the orchestrator's public name...) to where they really are;
nothing else of the host is reachable. The emulator plays the hypervisor, the
data source and DNS, not the image: it mounts `/.hypervisor` read-only into
the container with the boot script below (PID 1), a NoCloud seed and the
droplet's `/etc/hosts` (read-only as hardening, not a boundary: the droplet's
root has CAP_SYS_ADMIN for its dockerd and could remount it), and
`/.console` read-write, the droplet's serial console: its boot log and the
markers it reports through (`sshd-up`, `final-done`). The script boots the
droplet in DigitalOcean's order:

1. write `/etc/hosts` (the published names), seed
   `/var/lib/cloud/seed/nocloud` (instance-id, hostname, the droplet's public
   keys; the user_data),
2. `cloud-init init --local`, `cloud-init init` (fresh host keys, root's
   authorized_keys),
3. start sshd (port 22 of its own namespace) and tell the hypervisor
   (`sshd-up`); the emulator then answers `active` and acknowledges
   (`active`),
4. only then `cloud-init modules --mode=config` and `--mode=final`, which runs
   the user_data; its failure changes nothing in the API,
5. wait forever (a `docker stop` ends the wait at once).

Process droplets are `LocalProvider` machines: user_data runs before sshd and
the droplet's `/` is a folder of the host, its network the host's. They are
quick and need no root, for unit tests; they cannot be powered off or
snapshotted.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dropship.emulator.dockerd import DockerDaemon
from dropship.emulator.network import DropletNetwork, Internet
from dropship.errors import MachineError
from dropship.machines import MachineRequest
from dropship.machines.local import LocalProvider

DROPLET_CAPABILITIES = ("SYS_ADMIN",)
"""Root on a droplet (a VM) can mount, so it can run its own dockerd: an image target's build does.
Docker's default capability set can't (no mount namespace for `docker build`), and `--privileged`
is refused on this kind of host (it lacks CAP_SYS_RESOURCE), so the droplet gets CAP_SYS_ADMIN. Its
dockerd, in the container's overlay root, falls back to the vfs storage driver. Still no more than
a VM gives: its own `/`, nothing of the orchestrator's files."""

HYPERVISOR = "/.hypervisor"
"""What the emulator hands the droplet, read-only: the boot script, its seed, `hosts`, `active`."""
CONSOLE = "/.console"
"""What the droplet reports, read-write: `console.log`, `sshd.log`, `sshd-up`, `final-done`."""

BOOT_SCRIPT = r"""#!/bin/sh
# PID 1 of a container droplet, mounted by the emulator (the hypervisor).
HV=/.hypervisor
CON=/.console
trap 'exit 0' TERM INT
log() { echo "$(date -u +%H:%M:%S.%N) $*" >>"$CON/console.log"; }
log "boot"
cat "$HV/hosts" >/etc/hosts  # the hypervisor plays DNS: the names it relays, nothing else
mkdir -p /var/lib/cloud/seed/nocloud /run/sshd
cp "$HV/seed/meta-data" "$HV/seed/user-data" /var/lib/cloud/seed/nocloud/
cloud-init init --local >>"$CON/console.log" 2>&1
cloud-init init >>"$CON/console.log" 2>&1
log "cloud-init init done"
if /usr/sbin/sshd -E "$CON/sshd.log"; then
    echo "$(date -u +%s.%N)" >"$CON/sshd-up"
else
    log "sshd failed to start"
    exit 1
fi
i=0
while [ ! -e "$HV/active" ] && [ "$i" -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
log "active; cloud-init config and final stages"
cloud-init modules --mode=config >>"$CON/console.log" 2>&1
cloud-init modules --mode=final >>"$CON/console.log" 2>&1
echo "$(date -u +%s.%N)" >"$CON/final-done"
log "boot finished"
while :; do sleep 3600 & wait $!; done
"""


@dataclass(frozen=True)
class Boot:
    """What the hypervisor needs to boot droplet `droplet_id` (one value, as every backend takes it)."""

    droplet_id: int
    request: MachineRequest
    image: str
    """The image reference in the emulator's dockerd (stock image or snapshot)."""
    address: str
    port: int
    """Where the droplet is reached from the host (relayed to its sshd)."""
    public_keys: list[str]
    timeout: float


class Machines(Protocol):
    """A backend's droplets, by droplet id; failures raise `MachineError`."""

    separate: bool
    """True when droplets are separate machines (their files only over SSH)."""

    def boot(self, boot: Boot) -> dict[str, str]: ...

    def activate(self, droplet_id: int) -> None: ...

    def destroy(self, droplet_id: int) -> None: ...

    def power_off(self, droplet_id: int) -> None: ...

    def power_on(self, droplet_id: int, timeout: float) -> None: ...

    def snapshot(self, droplet_id: int, image_id: int) -> tuple[str, float]: ...

    def delete_image(self, ref: str) -> None: ...

    def close(self) -> None: ...


def _wait_banner(address: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=2) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class ContainerMachines:
    """Droplets as containers of `daemon`, their hypervisor folders under `folder`, each in a network
    namespace of its own that reaches what `internet` publishes."""

    separate = True

    def __init__(self, daemon: DockerDaemon, folder: Path, instance: str, internet: Internet) -> None:
        self.daemon = daemon
        self.folder = folder
        self.instance = instance  # keeps two emulators on one dockerd apart
        self.internet = internet
        self.networks: dict[int, DropletNetwork] = {}
        self.folder.mkdir(parents=True, exist_ok=True)

    def name(self, droplet_id: int) -> str:
        return f"droplet-{self.instance}-{droplet_id}"

    def hypervisor(self, droplet_id: int) -> Path:
        """The droplet's folder: `given()` and `console()` under it."""
        return self.folder / str(droplet_id)

    def given(self, droplet_id: int) -> Path:
        """What the droplet is handed, mounted read-only at HYPERVISOR."""
        return self.hypervisor(droplet_id) / "in"

    def console(self, droplet_id: int) -> Path:
        """What the droplet reports, mounted read-write at CONSOLE."""
        return self.hypervisor(droplet_id) / "console"

    def boot(self, boot: Boot) -> dict[str, str]:
        droplet_id, request = boot.droplet_id, boot.request
        given, console = self.given(droplet_id), self.console(droplet_id)
        (given / "seed").mkdir(parents=True, exist_ok=True)
        console.mkdir(exist_ok=True)
        (given / "boot").write_text(BOOT_SCRIPT)
        network = self.networks[droplet_id] = DropletNetwork(str(droplet_id), boot.address, boot.port, self.internet)
        (given / "hosts").write_text(network.hosts_file(request.name))
        meta = {"instance-id": str(droplet_id), "local-hostname": request.name, "public-keys": boot.public_keys}
        (given / "seed" / "meta-data").write_text(json.dumps(meta, indent=1) + "\n")  # JSON is YAML
        (given / "seed" / "user-data").write_text(request.user_data)
        self._clear(droplet_id)
        self.daemon.run(
            boot.image,
            ["/bin/sh", f"{HYPERVISOR}/boot"],
            name=self.name(droplet_id),
            mounts={str(console): CONSOLE},
            read_only_mounts={str(given): HYPERVISOR},
            hostname=request.name,
            labels={"dropship.emulator": self.instance, "dropship.droplet": str(droplet_id)},
            capabilities=DROPLET_CAPABILITIES,
            network_mode="none",
        )
        self._attach(droplet_id)
        self._wait_sshd(droplet_id, boot.address, boot.port, boot.timeout)
        return {}

    def _attach(self, droplet_id: int) -> None:
        """Relays into the running container's namespace (a new one at each start)."""
        name = self.name(droplet_id)
        network = self.networks.get(droplet_id)
        if network is None:
            raise MachineError(f"droplet {droplet_id} was destroyed while it started")
        pid = self.daemon.call(
            f"look up container {name}", lambda: int(self.daemon.client.api.inspect_container(name)["State"]["Pid"])
        )
        if pid <= 0:
            raise MachineError(f"droplet {droplet_id}: its container is not running")
        network.attach(pid)

    def _clear(self, droplet_id: int) -> None:
        console = self.console(droplet_id)
        for marker in (console / "sshd-up", console / "final-done", self.given(droplet_id) / "active"):
            marker.unlink(missing_ok=True)

    def _wait_sshd(self, droplet_id: int, address: str, port: int, timeout: float) -> None:
        console = self.console(droplet_id)
        deadline = time.monotonic() + timeout
        checked = 0.0
        while time.monotonic() < deadline:
            if (console / "sshd-up").exists():
                if _wait_banner(address, port, max(1.0, deadline - time.monotonic())):
                    return
                break
            if time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                container = self.daemon.container(self.name(droplet_id))
                if container is None:
                    raise MachineError(f"droplet {droplet_id}: its container is gone")
                if container.status == "exited":
                    break
            time.sleep(0.05)
        log = console / "console.log"  # the droplet's to write: a link there is not followed
        tail = log.read_text(errors="replace")[-600:] if log.is_file() and not log.is_symlink() else ""
        raise MachineError(
            f"droplet {droplet_id}: sshd did not come up on {address}:{port} in {timeout:.0f} s: "
            + " | ".join(tail.splitlines()[-6:])
        )

    def activate(self, droplet_id: int) -> None:
        """The API says `active`: let the boot go on to the config and final stages."""
        (self.given(droplet_id) / "active").touch()

    def destroy(self, droplet_id: int) -> None:
        network = self.networks.pop(droplet_id, None)
        if network is not None:
            network.close()
        self.daemon.remove(self.name(droplet_id))
        shutil.rmtree(self.hypervisor(droplet_id), ignore_errors=True)

    def power_off(self, droplet_id: int) -> None:
        self.daemon.stop_container(self.name(droplet_id), timeout=5)
        network = self.networks.get(droplet_id)
        if network is not None:
            network.detach()
        self._clear(droplet_id)

    def power_on(self, droplet_id: int, timeout: float) -> None:
        self._clear(droplet_id)
        network = self.networks.get(droplet_id)
        if network is None:
            raise MachineError(f"droplet {droplet_id} is destroyed: it can't be powered on")
        (self.given(droplet_id) / "hosts").write_text(
            network.hosts_file(self._hostname(droplet_id))
        )  # names published since
        self.daemon.start_container(self.name(droplet_id))
        self._attach(droplet_id)
        self._wait_sshd(droplet_id, network.address, network.port, timeout)

    def _hostname(self, droplet_id: int) -> str:
        container = self.daemon.container(self.name(droplet_id))
        return str(container.attrs["Config"]["Hostname"]) if container is not None else "localhost"

    def snapshot(self, droplet_id: int, image_id: int) -> tuple[str, float]:
        """`docker commit`: returns the image reference and its size in GB."""
        repository = f"dropship-emulator/snapshot-{self.instance}"
        attrs = self.daemon.commit(self.name(droplet_id), repository, str(image_id))
        return f"{repository}:{image_id}", round(float(attrs.get("Size") or 0) / 1e9, 2)

    def delete_image(self, ref: str) -> None:
        self.daemon.remove_image(ref)

    def close(self) -> None:
        for network in list(self.networks.values()):
            network.close()
        self.networks.clear()
        for container in self.daemon.call(
            "list containers",
            lambda: self.daemon.client.containers.list(
                all=True, filters={"label": f"dropship.emulator={self.instance}"}
            ),
        ):
            self.daemon.call("remove container", lambda c=container: c.remove(force=True))  # type: ignore[misc]
        shutil.rmtree(self.folder, ignore_errors=True)


class ProcessMachines:
    """Droplets as `LocalProvider` machines (sshd + user_data on this host)."""

    separate = False

    def __init__(self, state_dir: Path) -> None:
        self.local = LocalProvider(state_dir)
        self._ids: dict[int, str] = {}

    def boot(self, boot: Boot) -> dict[str, str]:
        machine = self.local.create(boot.request, address=boot.address, port=boot.port)
        self._ids[boot.droplet_id] = machine.id
        return {"root": machine.root}

    def activate(self, droplet_id: int) -> None:
        pass

    def destroy(self, droplet_id: int) -> None:
        machine_id = self._ids.pop(droplet_id, None)
        if machine_id:
            self.local.delete(machine_id)

    def _unsupported(self, what: str) -> MachineError:
        return MachineError(f"process droplets can't {what}: start the emulator with container droplets")

    def power_off(self, droplet_id: int) -> None:
        raise self._unsupported("power off")

    def power_on(self, droplet_id: int, timeout: float) -> None:
        raise self._unsupported("power on")

    def snapshot(self, droplet_id: int, image_id: int) -> tuple[str, float]:
        raise self._unsupported("be snapshotted")

    def delete_image(self, ref: str) -> None:
        pass

    def close(self) -> None:
        for machine in self.local.list():
            self.local.delete(machine.id)
