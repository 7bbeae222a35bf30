#!/bin/sh
# Runs in the test root (chroot), as root: the operator's steps of docs/deploy.md, sections 3 and 4,
# with the lab PKI and a publisher key made on the spot. The model file is /root/model.gguf.
set -eu
cd /root
airlockctl pki init --dir /root/pki >/dev/null
airlockctl pki issue --dir /root/pki --name alice >/dev/null
airlockctl pki crl --dir /root/pki >/dev/null
install -m 0644 pki/server.crt /etc/airlock/tls/server.crt
install -m 0600 -o airlock -g airlock pki/server.key /etc/airlock/tls/server.key
install -m 0644 pki/ca.crt /etc/airlock/tls/clients-ca.crt
install -m 0644 pki/crl.pem /etc/airlock/tls/clients-ca.crl
airlockctl model keygen --out /root/acme.key >/dev/null
airlockctl model pack --key /root/acme.key --name stories --version 1 --licence mit --out /root/stories-1 \
  /root/model.gguf >/dev/null
install -m 0644 /root/acme.pub /etc/airlock/publishers/publisher.pub
airlockctl model import /root/stories-1 --trusted-key /etc/airlock/publishers/publisher.pub \
  --into /var/lib/airlock/models >/dev/null
# The configuration stays the package's conffile: root:airlock 0640.
cat /root/airlockd.yaml >/etc/airlock/airlockd.yaml
systemctl enable airlockd.service airlock-check.service
