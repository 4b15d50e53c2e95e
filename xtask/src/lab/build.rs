//! Building a lab from its plan: the internet (`inet`) with its servers, public hosts,
//! routers with their LANs and hosts, NAT rules, link impairment, then the readiness checks
//! (coturn answers, every uplink reaches the observer from the expected public address,
//! miniupnpd has decided about port forwarding).

use std::fs;
use std::time::Duration;

use super::impair::{self, Side};
use super::topology::{
    INET_GW, INET_GW6, OBSERVER_PORT, PUBLIC_GW, PUBLIC_GW6, PublicPlan, RouterPlan, SRV1, SRV1_6, SRV2, SRV2_6,
    STUN_PORT, STUN1, STUN1_6, STUN2, STUN2_6, TURN_IP, TURN_PORT,
};
use super::{Lab, Result, daemons, err, nat, netns, probe, wait_until};

impl Lab {
    /// Builds every node, link, NAT and daemon of the plan, then checks the uplinks.
    pub(super) fn build(&mut self) -> Result<()> {
        self.build_inet()?;
        let publics = self.plan.publics.clone();
        for p in &publics {
            self.build_public(p)?;
        }
        let routers = self.plan.routers.clone();
        for r in &routers {
            self.build_router(r)?;
        }
        for r in routers.iter().filter(|r| r.impaired()) {
            self.set_link(r, r.delay_ms, r.loss_pct)?;
        }
        self.wait_for_servers()?;
        self.check_uplinks()?;
        self.start_upnp()?;
        self.write_state()
    }

    fn build_inet(&mut self) -> Result<()> {
        let ns = netns::ns_name(&self.prefix, "inet");
        netns::create(&ns, true)?;
        netns::run(netns::exec_in(&ns, "sysctl").args([
            "-qw",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.default.send_redirects=0",
        ]))?;
        let mut script = String::from(
            "link add br0 type bridge mcast_snooping 0\n\
             link add brp type bridge mcast_snooping 0\n",
        );
        for a in [INET_GW, STUN1, STUN2, SRV1, SRV2, TURN_IP] {
            script.push_str(&format!("addr add {a}/24 dev br0\n"));
        }
        script.push_str(&format!(
            "addr add {PUBLIC_GW}/24 dev brp\nlink set br0 up\nlink set brp up\n"
        ));
        netns::ip_batch(&ns, &script)?;
        // Routers' link chains on this end (router -> internet direction), empty until impaired.
        let chains: String = self
            .plan
            .routers
            .iter()
            .filter(|r| r.parent == "inet")
            .map(|r| impair::link_chain(r, Side::Parent))
            .collect();
        if !chains.is_empty() {
            netns::run_with_input(netns::exec_in(&ns, "iptables-restore").arg("--noflush"), Some(&chains))?;
        }
        if self.plan.ipv6 {
            self.build_inet6(&ns)?;
        }
        let coturn = daemons::coturn_args(&self.dir)?;
        let mut argv = vec!["turnserver".to_string()];
        argv.extend(coturn);
        self.daemon("coturn", "inet", &argv)?;
        self.start_turn(&[])?;
        let tool = self.tool.display().to_string();
        let port = OBSERVER_PORT.to_string();
        let ips = format!("{SRV1},{SRV2}");
        self.daemon(
            "observer",
            "inet",
            &[tool.as_str(), "lab", "observer", "--ips", &ips, "--port", &port],
        )?;
        Ok(())
    }

    /// The internet's IPv6: forwarding, the gateways' and servers' addresses, a route to each
    /// dual-stack router's /64, and the IPv6 coturn (RFC 5780 on two addresses).
    fn build_inet6(&mut self, ns: &str) -> Result<()> {
        netns::run(netns::exec_in(ns, "sysctl").args(["-qw", "net.ipv6.conf.all.forwarding=1"]))?;
        let mut script = String::new();
        for a in [INET_GW6, STUN1_6, STUN2_6, SRV1_6, SRV2_6] {
            script.push_str(&format!("addr add {a}/64 dev br0 nodad\n"));
        }
        script.push_str(&format!("addr add {PUBLIC_GW6}/64 dev brp nodad\n"));
        netns::ip_batch(ns, &script)?;
        let chains: String = self
            .plan
            .routers
            .iter()
            .filter(|r| r.parent == "inet")
            .map(|r| impair::link_chain6(r, Side::Parent))
            .collect();
        if !chains.is_empty() {
            netns::run_with_input(netns::exec_in(ns, "ip6tables-restore").arg("--noflush"), Some(&chains))?;
        }
        let mut argv = vec!["turnserver".to_string()];
        argv.extend(daemons::coturn6_args(&self.dir)?);
        self.daemon("coturn6", "inet", &argv)
    }

    fn build_public(&mut self, p: &PublicPlan) -> Result<()> {
        let (name, ip) = (p.name.as_str(), p.ip);
        let ns = netns::ns_name(&self.prefix, name);
        let inet = netns::ns_name(&self.prefix, "inet");
        netns::create(&ns, false)?;
        netns::veth(&ns, "eth0", &inet, name)?;
        netns::ip_batch(&inet, &format!("link set {name} master brp up\n"))?;
        let mut script = format!("addr add {ip}/24 dev eth0\nlink set eth0 up\nroute add default via {PUBLIC_GW}\n");
        if let Some(ip6) = p.ip6 {
            script.push_str(&format!(
                "addr add {ip6}/64 dev eth0 nodad\nroute add ::/0 via {PUBLIC_GW6}\n"
            ));
        }
        netns::ip_batch(&ns, &script)
    }

    fn build_router(&mut self, r: &RouterPlan) -> Result<()> {
        let ns = netns::ns_name(&self.prefix, &r.name);
        let parent = netns::ns_name(&self.prefix, &r.parent);
        netns::create(&ns, true)?;
        netns::veth(&ns, "wan", &parent, &r.name)?;
        netns::ip_batch(
            &parent,
            &format!("link set {} master {} up\n", r.name, r.parent_bridge()),
        )?;
        // On the internet the WAN is a /32 whose only neighbour is the gateway: router-to-router
        // traffic goes through inet (no ARP round trip per new peer to distort timings).
        let mut script = format!("link set wan up\naddr add {}/{} dev wan\n", r.wan, r.wan_prefix_len);
        if r.wan_prefix_len == 32 {
            script.push_str(&format!("route add {} dev wan scope link\n", r.wan_gw));
        }
        script.push_str(&format!(
            "route add default via {} dev wan\n\
             link add lan type bridge mcast_snooping 0\n\
             addr add {}/24 dev lan\nlink set lan up\n",
            r.wan_gw, r.lan_ip
        ));
        netns::ip_batch(&ns, &script)?;
        if let Some(v6) = &r.v6 {
            // No NAT: the router routes its /64; the internet routes it to the router's WAN.
            netns::run(netns::exec_in(&ns, "sysctl").args(["-qw", "net.ipv6.conf.all.forwarding=1"]))?;
            netns::ip_batch(
                &ns,
                &format!(
                    "addr add {}/64 dev wan nodad\nroute add ::/0 via {INET_GW6} dev wan\n\
                     addr add {}/64 dev lan nodad\n",
                    v6.wan, v6.lan_ip
                ),
            )?;
            netns::ip_batch(&parent, &format!("route add {}/64 via {}\n", v6.lan_net, v6.wan))?;
        }
        for h in &r.hosts {
            let hns = netns::ns_name(&self.prefix, &h.name);
            netns::create(&hns, false)?;
            netns::veth(&hns, "eth0", &ns, &h.name)?;
            netns::ip_batch(&ns, &format!("link set {} master lan up\n", h.name))?;
            let mut script = String::from("link set eth0 up\n");
            if h.v4 {
                script.push_str(&format!(
                    "addr add {}/24 dev eth0\nroute add default via {}\n",
                    h.ip, h.gw
                ));
            }
            if let (Some(ip6), Some(v6)) = (h.ip6, &r.v6) {
                script.push_str(&format!(
                    "addr add {ip6}/64 dev eth0 nodad\nroute add ::/0 via {}\n",
                    v6.lan_ip
                ));
            }
            netns::ip_batch(&hns, &script)?;
        }
        nat::apply(&ns, r)?;
        // Link chains: this router's own WAN (internet -> router) and its child routers' WANs
        // (child -> internet), empty until impaired.
        let mut chains = impair::link_chain(r, Side::Router);
        for child in self.plan.routers.iter().filter(|c| c.parent == r.name) {
            chains.push_str(&impair::link_chain(child, Side::Parent));
        }
        netns::run_with_input(netns::exec_in(&ns, "iptables-restore").arg("--noflush"), Some(&chains))?;
        let chains6 = impair::link_chain6(r, Side::Router);
        if !chains6.is_empty() {
            netns::run_with_input(
                netns::exec_in(&ns, "ip6tables-restore").arg("--noflush"),
                Some(&chains6),
            )?;
        }
        Ok(())
    }

    /// Sets delay and loss on both directions of `r`'s WAN link. Never leaves a rule that
    /// queues packets to a queue nobody reads.
    pub(super) fn set_link(&mut self, r: &RouterPlan, delay_ms: u32, loss_pct: f64) -> Result<()> {
        for side in [Side::Router, Side::Parent] {
            let node = match side {
                Side::Router => r.name.clone(),
                Side::Parent => r.parent.clone(),
            };
            let ns = self.ns(&node)?;
            let dual = r.v6.is_some();
            let restore = |text: String| {
                if dual {
                    netns::run_with_input(netns::exec_in(&ns, "ip6tables-restore").arg("--noflush"), Some(&text))?;
                }
                netns::run_with_input(netns::exec_in(&ns, "iptables-restore").arg("--noflush"), Some(&text))
            };
            restore(impair::link_rules(r, side, 0, loss_pct))?;
            let name = format!("delay-{}-{}", r.name, side.label());
            if let Some(pid) = daemons::recorded_pid(&self.dir, &name) {
                daemons::stop(&[pid]);
                let _ = fs::remove_file(self.dir.join("pids").join(&name));
            }
            if delay_ms > 0 {
                let tool = self.tool.display().to_string();
                let queue = impair::queue_num(r, side).to_string();
                let ms = delay_ms.to_string();
                self.daemon(
                    &name,
                    &node,
                    &[tool.as_str(), "lab", "nfq-delay", "--queue", &queue, "--ms", &ms],
                )?;
                self.wait_for_log(&name, impair::READY_LINE, Duration::from_secs(5))?;
                restore(impair::link_rules(r, side, delay_ms, loss_pct))?;
            }
        }
        Ok(())
    }

    /// Starts the TURN relay (a second coturn on `inet`), its arguments ended by `extra`.
    fn start_turn(&mut self, extra: &[&str]) -> Result<()> {
        let mut argv = vec!["turnserver".to_string()];
        argv.extend(daemons::turn_args(&self.dir, extra)?);
        self.daemon(daemons::TURN_DAEMON, "inet", &argv)
    }

    /// Restarts the TURN relay with `extra` arguments after the lab's own (e.g.
    /// `["--user-quota", "1"]` for a test of the quota, `["--stale-nonce=2"]` for short-lived
    /// nonces; none: as the lab starts it), and waits until it answers. Its allocations are
    /// gone; its log starts anew.
    pub fn restart_turn(&mut self, extra: &[&str]) -> Result<()> {
        if let Some(pid) = daemons::recorded_pid(&self.dir, daemons::TURN_DAEMON) {
            daemons::stop(&[pid]);
        }
        let _ = fs::remove_file(self.dir.join(daemons::TURN_LOG));
        self.start_turn(extra)?;
        self.wait_for_stun(&[format!("{TURN_IP}:{TURN_PORT}")], daemons::TURN_DAEMON)
    }

    /// Waits until coturn (STUN and the TURN relay) and the observer answer, asked from
    /// `inet` itself.
    fn wait_for_servers(&self) -> Result<()> {
        self.wait_for_log("observer", probe::OBSERVER_READY, Duration::from_secs(5))?;
        self.wait_for_stun(
            &[format!("{STUN1}:{STUN_PORT}"), format!("{STUN2}:{STUN_PORT}")],
            "coturn",
        )?;
        self.wait_for_stun(&[format!("{TURN_IP}:{TURN_PORT}")], daemons::TURN_DAEMON)
    }

    /// Waits until every one of `servers` answers a STUN Binding request from `inet`.
    fn wait_for_stun(&self, servers: &[String], daemon: &str) -> Result<()> {
        let mut args = vec!["stun", "--timeout-ms", "500"];
        args.extend(servers.iter().map(String::as_str));
        if wait_until(Duration::from_secs(10), || self.probe("inet", &args).is_ok()) {
            Ok(())
        } else {
            Err(err(format!(
                "coturn does not answer STUN on {}; its log: {}",
                servers.join(" and "),
                self.dir.join(format!("{daemon}.log")).display()
            )))
        }
    }

    /// From every router and public host at once, asks the observer which address it sees:
    /// checks every uplink and the NAT in front of it, and resolves each WAN neighbour now
    /// rather than on the first measured packet.
    fn check_uplinks(&self) -> Result<()> {
        let observer = format!("{SRV1}:{OBSERVER_PORT}");
        let mut checks = Vec::new();
        for r in &self.plan.routers {
            checks.push((r.name.clone(), r.public_ip));
        }
        for p in &self.plan.publics {
            checks.push((p.name.clone(), p.ip));
        }
        let mut running = Vec::new();
        for (node, expect) in checks {
            let child = self.spawn_probe(&node, &["observe", "--timeout-ms", "5000", &observer])?;
            running.push((node, expect, child));
        }
        let mut failures = Vec::new();
        for (node, expect, child) in running {
            let out = child.wait_with_output()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let seen_ip = text
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.rsplit_once(':'))
                .map(|(ip, _)| ip.to_string());
            if seen_ip.as_deref() != Some(expect.to_string().as_str()) {
                failures.push(format!(
                    "{node}: expected to be seen as {expect}, got: {} {}",
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(err(format!("uplink check failed: {}", failures.join("; "))))
        }
    }

    fn start_upnp(&mut self) -> Result<()> {
        let routers: Vec<RouterPlan> = self.plan.routers.iter().filter(|r| r.upnp).cloned().collect();
        for r in &routers {
            let ns = self.ns(&r.name)?;
            let child = daemons::start_miniupnpd(&self.dir, &ns, r)?;
            self.children.push(child);
        }
        // Behind a restrictive NAT, miniupnpd's STUN test takes 3 x 3 s before it gives up.
        let names: Vec<String> = routers.iter().map(|r| format!("miniupnpd-{}", r.name)).collect();
        wait_until(Duration::from_secs(20), || {
            names.iter().all(|n| daemons::upnp_ready(&self.log(n)))
        });
        for r in &routers {
            let log = self.log(&format!("miniupnpd-{}", r.name));
            if !log.contains("HTTP listening") {
                return Err(err(format!(
                    "miniupnpd on {} did not start; its log: {}",
                    r.name,
                    self.dir.join(format!("miniupnpd-{}.log", r.name)).display()
                )));
            }
            self.upnp
                .insert(r.name.clone(), daemons::upnp_verdict(&log).to_string());
        }
        Ok(())
    }
}
