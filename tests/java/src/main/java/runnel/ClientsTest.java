package runnel;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.*;

/**
 * The Java client (kafka-clients 4.x) against a Runnel broker: `ClientsTest <case> HOST:PORT`,
 * cases producer, consumer, consumer-protocol (KIP-848), admin, streams. Prints OK and exits 0 when every check held; otherwise
 * prints what failed and exits 1. Run by tests/e2e/java.rs.
 */
public final class ClientsTest {
    static String bootstrap;

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: ClientsTest <producer|consumer|consumer-protocol|admin|streams|streams-eos> HOST:PORT");
            System.exit(2);
        }
        bootstrap = args[1];
        try {
            switch (args[0]) {
                case "producer" -> producer();
                case "consumer" -> consumer();
                case "consumer-protocol" -> consumerProtocol();
                case "admin" -> admin();
                case "streams" -> streams();
                case "streams-eos" -> streamsEos();
                case "streams-eos-app" -> {
                    streamsEosApp();
                    return;
                }
                default -> throw new IllegalArgumentException("unknown case " + args[0]);
            }
        } catch (Throwable t) {
            System.out.println("FAILED: " + t);
            t.printStackTrace(System.out);
            System.exit(1);
        }
        System.out.println("OK");
        System.exit(0);
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static Properties base() {
        Properties p = new Properties();
        p.put(CommonClientConfigs.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        return p;
    }

    static Admin admin_() {
        return Admin.create(base());
    }

    static void createTopic(Admin a, String name, int partitions, Map<String, String> configs)
            throws Exception {
        a.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs)))
                .all()
                .get(30, TimeUnit.SECONDS);
    }

    static KafkaProducer<String, byte[]> producer(Map<String, Object> extra) {
        Properties p = base();
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<String, byte[]> consumer(Map<String, Object> extra) {
        Properties p = base();
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    /** Every record of `topic` from the beginning (assign), until `n` are read. */
    static List<ConsumerRecord<String, byte[]>> readAll(String topic, int partitions, int n) {
        List<ConsumerRecord<String, byte[]>> out = new ArrayList<>();
        try (KafkaConsumer<String, byte[]> c =
                consumer(Map.of(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, 2 << 20))) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < partitions; i++) tps.add(new TopicPartition(topic, i));
            c.assign(tps);
            c.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + 60_000;
            while (out.size() < n) {
                check(System.currentTimeMillis() < deadline, "read " + out.size() + " of " + n + " from " + topic);
                for (ConsumerRecord<String, byte[]> r : c.poll(Duration.ofMillis(200))) out.add(r);
            }
        }
        return out;
    }

    // ---------------------------------------------------------------------------- producer

    static void producer() throws Exception {
        try (Admin a = admin_()) {
            createTopic(a, "j-prod", 3, Map.of());
        }
        int sent = 0;
        // acks 0, 1, all; idempotent; every codec.
        String[][] cases = {
            {"0", "false", "none"}, {"1", "false", "none"}, {"all", "false", "none"},
            {"all", "true", "none"}, {"all", "true", "gzip"}, {"all", "true", "snappy"},
            {"all", "true", "lz4"}, {"all", "true", "zstd"}, {"1", "false", "zstd"},
        };
        for (String[] c : cases) {
            Map<String, Object> conf = new HashMap<>();
            conf.put(ProducerConfig.ACKS_CONFIG, c[0]);
            conf.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, c[1]);
            conf.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, c[2]);
            conf.put(ProducerConfig.LINGER_MS_CONFIG, 5);
            try (KafkaProducer<String, byte[]> p = producer(conf)) {
                List<Future<RecordMetadata>> fs = new ArrayList<>();
                for (int i = 0; i < 200; i++) {
                    String v = String.join("/", c) + "#" + i;
                    ProducerRecord<String, byte[]> r = new ProducerRecord<>("j-prod", "k" + i, v.getBytes(StandardCharsets.UTF_8));
                    r.headers().add("case", String.join("/", c).getBytes(StandardCharsets.UTF_8));
                    r.headers().add("i", Integer.toString(i).getBytes(StandardCharsets.UTF_8));
                    fs.add(p.send(r));
                }
                p.flush();
                for (Future<RecordMetadata> f : fs) {
                    RecordMetadata m = f.get(30, TimeUnit.SECONDS);
                    // acks=0 gets no offset back.
                    check(c[0].equals("0") ? m.offset() == -1 : m.offset() >= 0, "offset for " + String.join("/", c));
                }
                sent += fs.size();
            }
        }
        // A 900 KB record (max.message.bytes is 1 MB).
        byte[] big = new byte[900 * 1024];
        for (int i = 0; i < big.length; i++) big[i] = (byte) (i * 31);
        try (KafkaProducer<String, byte[]> p = producer(Map.of(
                ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 2 << 20, ProducerConfig.ACKS_CONFIG, "all"))) {
            RecordMetadata m = p.send(new ProducerRecord<>("j-prod", 0, "big", big)).get(30, TimeUnit.SECONDS);
            check(m.offset() >= 0, "the 900 KB record was acknowledged");
            sent++;
            // 2 MB: over max.message.bytes, refused by the broker.
            try {
                p.send(new ProducerRecord<>("j-prod", 0, "huge", new byte[1_500_000])).get(30, TimeUnit.SECONDS);
                check(false, "a 1.5 MB record was accepted");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof org.apache.kafka.common.errors.RecordTooLargeException,
                        "a 1.5 MB record: " + e.getCause());
            }
        }
        List<ConsumerRecord<String, byte[]>> all = readAll("j-prod", 3, sent);
        check(all.size() == sent, "read back " + all.size() + " of " + sent);
        Set<String> seen = new HashSet<>();
        for (ConsumerRecord<String, byte[]> r : all) {
            if (r.key().equals("big")) {
                check(Arrays.equals(r.value(), big), "the 900 KB record came back intact");
                continue;
            }
            String v = new String(r.value(), StandardCharsets.UTF_8);
            check(seen.add(v), "record " + v + " read twice");
            Header h = r.headers().lastHeader("case");
            check(h != null && v.startsWith(new String(h.value(), StandardCharsets.UTF_8)), "headers of " + v);
            check(r.headers().lastHeader("i") != null, "second header of " + v);
        }
        check(seen.size() == sent - 1, "every record once: " + seen.size());
    }

    // ---------------------------------------------------------------------------- consumer

    static void produceN(String topic, int partitions, int n, long timestamp) throws Exception {
        try (KafkaProducer<String, byte[]> p = producer(Map.of(ProducerConfig.ACKS_CONFIG, "all"))) {
            for (int i = 0; i < n; i++) {
                p.send(new ProducerRecord<>(topic, i % partitions, timestamp + i, "k" + i,
                        Integer.toString(i).getBytes(StandardCharsets.UTF_8)));
            }
            p.flush();
        }
    }

    /** The usual listener of an eager-rebalancing consumer: commit what it read before the
     * partitions go. */
    static ConsumerRebalanceListener commitOnRevoke(KafkaConsumer<String, byte[]> c) {
        return new ConsumerRebalanceListener() {
            public void onPartitionsRevoked(Collection<TopicPartition> ps) {
                c.commitSync();
            }

            public void onPartitionsAssigned(Collection<TopicPartition> ps) {}
        };
    }

    /** Polls until the consumer has an assignment of `n` partitions, collecting records. */
    static void awaitAssignment(KafkaConsumer<String, byte[]> c, int n, List<ConsumerRecord<String, byte[]>> into) {
        long deadline = System.currentTimeMillis() + 60_000;
        while (c.assignment().size() != n) {
            check(System.currentTimeMillis() < deadline, "assignment of " + n + ": " + c.assignment());
            for (ConsumerRecord<String, byte[]> r : c.poll(Duration.ofMillis(100))) into.add(r);
        }
    }

    static void consumer() throws Exception {
        String topic = "j-cons";
        try (Admin a = admin_()) {
            createTopic(a, topic, 4, Map.of());
        }
        long t0 = 1_700_000_000_000L;
        produceN(topic, 4, 400, t0);

        // Subscribe with each assignor: two members share the partitions, then one leaves and
        // the other takes everything; together they read every record once (commitSync on
        // revocation).
        for (String assignor : List.of(RangeAssignor.class.getName(), CooperativeStickyAssignor.class.getName())) {
            String group = "j-" + assignor.substring(assignor.lastIndexOf('.') + 1);
            Map<String, Object> conf = Map.of(
                    ConsumerConfig.GROUP_ID_CONFIG, group,
                    ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor,
                    ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10_000);
            Set<String> read = ConcurrentHashMap.newKeySet();
            KafkaConsumer<String, byte[]> one = consumer(conf);
            KafkaConsumer<String, byte[]> two = consumer(conf);
            one.subscribe(List.of(topic), commitOnRevoke(one));
            two.subscribe(List.of(topic), commitOnRevoke(two));
            long deadline = System.currentTimeMillis() + 90_000;
            // Both members get partitions.
            while (one.assignment().isEmpty() || two.assignment().isEmpty()
                    || one.assignment().size() + two.assignment().size() != 4) {
                check(System.currentTimeMillis() < deadline, group + ": both members assigned: "
                        + one.assignment() + " " + two.assignment());
                for (var r : one.poll(Duration.ofMillis(50))) read.add(r.value().length + ":" + new String(r.value()));
                for (var r : two.poll(Duration.ofMillis(50))) read.add(r.value().length + ":" + new String(r.value()));
            }
            one.commitSync();
            two.commitSync();
            two.close();
            // The survivor takes all four partitions and reads the rest, to the end of each.
            while (one.assignment().size() != 4 || read.size() < 400
                    || !one.assignment().stream().allMatch(tp -> one.position(tp) == 100)) {
                check(System.currentTimeMillis() < deadline, group + ": survivor read " + read.size());
                for (var r : one.poll(Duration.ofMillis(100))) read.add(r.value().length + ":" + new String(r.value()));
            }
            one.commitSync();
            Map<TopicPartition, OffsetAndMetadata> committed = one.committed(new HashSet<>(one.assignment()));
            check(committed.size() == 4 && committed.values().stream().allMatch(Objects::nonNull),
                    group + ": every partition committed: " + committed);
            long total = committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            check(total == 400, group + ": committed offsets add up to " + total);
            one.close();
        }

        // Static membership: a member with group.instance.id leaves without a LeaveGroup and
        // comes back under the same id; it resumes at its commitAsync'ed offsets.
        Map<String, Object> stat = Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, "j-static",
                ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "member-1",
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 30_000);
        int firstRead;
        try (KafkaConsumer<String, byte[]> c = consumer(stat)) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<String, byte[]>> got = new ArrayList<>();
            awaitAssignment(c, 4, got);
            long deadline = System.currentTimeMillis() + 60_000;
            while (got.size() < 100) {
                check(System.currentTimeMillis() < deadline, "static member read " + got.size());
                for (var r : c.poll(Duration.ofMillis(100))) got.add(r);
            }
            AtomicReference<Exception> asyncErr = new AtomicReference<>();
            CountDownLatch done = new CountDownLatch(1);
            c.commitAsync((offsets, e) -> { asyncErr.set(e); done.countDown(); });
            while (done.getCount() > 0) {
                check(System.currentTimeMillis() < deadline, "commitAsync callback");
                c.poll(Duration.ofMillis(50));
            }
            check(asyncErr.get() == null, "commitAsync: " + asyncErr.get());
            firstRead = got.size();
        }
        try (KafkaConsumer<String, byte[]> c = consumer(stat)) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<String, byte[]>> got = new ArrayList<>();
            awaitAssignment(c, 4, got);
            long deadline = System.currentTimeMillis() + 60_000;
            while (got.size() + firstRead < 400) {
                check(System.currentTimeMillis() < deadline, "static member resumed: " + got.size() + " + " + firstRead);
                for (var r : c.poll(Duration.ofMillis(100))) got.add(r);
            }
            check(got.size() + firstRead == 400, "resumed at the committed offsets: " + got.size() + " + " + firstRead);
        }

        // assign + seek, offsetsForTimes, pause/resume, position.
        try (KafkaConsumer<String, byte[]> c = consumer(Map.of(ConsumerConfig.GROUP_ID_CONFIG, "j-assign"))) {
            TopicPartition p0 = new TopicPartition(topic, 0), p1 = new TopicPartition(topic, 1);
            c.assign(List.of(p0, p1));
            c.seek(p0, 50);
            c.seek(p1, 0);
            // Records i with i % 4 == 0 went to partition 0 at timestamp t0 + i.
            Map<TopicPartition, OffsetAndTimestamp> at = c.offsetsForTimes(Map.of(p0, t0 + 200));
            check(at.get(p0) != null && at.get(p0).offset() == 50, "offsetsForTimes: " + at);
            Map<TopicPartition, Long> ends = c.endOffsets(List.of(p0, p1));
            check(ends.get(p0) == 100 && ends.get(p1) == 100, "endOffsets: " + ends);
            c.pause(List.of(p1));
            List<ConsumerRecord<String, byte[]>> got = new ArrayList<>();
            long deadline = System.currentTimeMillis() + 60_000;
            while (got.size() < 50) {
                check(System.currentTimeMillis() < deadline, "read after seek: " + got.size());
                for (var r : c.poll(Duration.ofMillis(100))) got.add(r);
            }
            check(got.stream().allMatch(r -> r.partition() == 0 && r.offset() >= 50), "paused partition not read");
            check(c.position(p0) == 100, "position after reading p0: " + c.position(p0));
            c.resume(List.of(p1));
            got.clear();
            while (got.size() < 100) {
                check(System.currentTimeMillis() < deadline, "read after resume: " + got.size());
                for (var r : c.poll(Duration.ofMillis(100))) got.add(r);
            }
            check(got.stream().allMatch(r -> r.partition() == 1), "resumed partition read");
            c.commitSync(Map.of(p1, new OffsetAndMetadata(100, "done")));
            check("done".equals(c.committed(Set.of(p1)).get(p1).metadata()), "commit metadata");
        }
    }

    // ------------------------------------------------------------- consumer protocol (KIP-848)

    /**
     * group.protocol=consumer: the broker assigns. Two members share four partitions without
     * overlap (uniform), one leaves and the other takes all; together they read every record
     * once. The Admin client describes the group as a consumer group; a regex subscription
     * (SubscriptionPattern, matched by the broker) and the range assignor work too.
     */
    static void consumerProtocol() throws Exception {
        String topic = "j-kip848";
        try (Admin a = admin_()) {
            createTopic(a, topic, 4, Map.of());
        }
        produceN(topic, 4, 400, 1_700_000_000_000L);
        String group = "j-848";
        Map<String, Object> conf = Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
        Set<String> read = ConcurrentHashMap.newKeySet();
        int[] dupes = {0};
        KafkaConsumer<String, byte[]> one = consumer(conf);
        KafkaConsumer<String, byte[]> two = consumer(conf);
        one.subscribe(List.of(topic), commitOnRevoke(one));
        two.subscribe(List.of(topic), commitOnRevoke(two));
        long deadline = System.currentTimeMillis() + 90_000;
        while (one.assignment().size() != 2 || two.assignment().size() != 2) {
            check(System.currentTimeMillis() < deadline, "two members with two partitions each: "
                    + one.assignment() + " " + two.assignment());
            for (var r : one.poll(Duration.ofMillis(50))) if (!read.add(r.value().length + ":" + new String(r.value()))) dupes[0]++;
            for (var r : two.poll(Duration.ofMillis(50))) if (!read.add(r.value().length + ":" + new String(r.value()))) dupes[0]++;
        }
        Set<TopicPartition> both = new HashSet<>(one.assignment());
        both.addAll(two.assignment());
        check(both.size() == 4, "no partition with two members: " + one.assignment() + " " + two.assignment());
        one.commitSync();
        two.commitSync();
        try (Admin a = admin_()) {
            ConsumerGroupDescription d = a.describeConsumerGroups(List.of(group))
                    .describedGroups().get(group).get(30, TimeUnit.SECONDS);
            check(d.type() == GroupType.CONSUMER, "a consumer group: " + d);
            check(d.members().size() == 2, "two members: " + d);
            check(d.members().stream().mapToInt(m -> m.assignment().topicPartitions().size()).sum() == 4,
                    "their assignments: " + d);
            check("uniform".equals(d.partitionAssignor()), "the default assignor: " + d.partitionAssignor());
            Collection<GroupListing> listed = a.listGroups().all().get(30, TimeUnit.SECONDS);
            check(listed.stream().anyMatch(g -> g.groupId().equals(group) && g.type().orElse(null) == GroupType.CONSUMER),
                    "listed as a consumer group: " + listed);
        }
        two.close();
        while (one.assignment().size() != 4 || read.size() < 400
                || !one.assignment().stream().allMatch(tp -> one.position(tp) == 100)) {
            check(System.currentTimeMillis() < deadline, "survivor read " + read.size() + " of 400, assignment "
                    + one.assignment());
            for (var r : one.poll(Duration.ofMillis(100))) if (!read.add(r.value().length + ":" + new String(r.value()))) dupes[0]++;
        }
        one.commitSync();
        Map<TopicPartition, OffsetAndMetadata> committed = one.committed(new HashSet<>(one.assignment()));
        long total = committed.values().stream().filter(Objects::nonNull).mapToLong(OffsetAndMetadata::offset).sum();
        check(total == 400, "committed offsets add up to " + total + ": " + committed);
        check(dupes[0] == 0, dupes[0] + " records read twice (a commit on revocation was lost)");
        one.close();

        // A regex subscription, matched by the broker, with the range assignor.
        Map<String, Object> re = Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, "j-848-regex",
                ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer",
                ConsumerConfig.GROUP_REMOTE_ASSIGNOR_CONFIG, "range");
        try (KafkaConsumer<String, byte[]> c = consumer(re)) {
            c.subscribe(new SubscriptionPattern("j-kip8.*"));
            List<ConsumerRecord<String, byte[]>> got = new ArrayList<>();
            awaitAssignment(c, 4, got);
            while (got.size() < 400) {
                check(System.currentTimeMillis() < deadline, "regex member read " + got.size());
                for (var r : c.poll(Duration.ofMillis(100))) got.add(r);
            }
        }
        try (Admin a = admin_()) {
            ConsumerGroupDescription d = a.describeConsumerGroups(List.of("j-848-regex"))
                    .describedGroups().get("j-848-regex").get(30, TimeUnit.SECONDS);
            check(d.members().isEmpty(), "the member left: " + d);
        }
    }

    // ---------------------------------------------------------------------------- admin

    static void admin() throws Exception {
        try (Admin a = admin_()) {
            DescribeClusterResult dc = a.describeCluster();
            Collection<Node> nodes = dc.nodes().get(30, TimeUnit.SECONDS);
            check(nodes.size() == 1, "one broker: " + nodes);
            check(dc.clusterId().get() != null && dc.controller().get() != null, "cluster id and controller");

            // createTopics with configs; describeTopics; describeConfigs.
            createTopic(a, "j-admin", 2, Map.of("retention.ms", "3600000", "cleanup.policy", "delete",
                    "compression.type", "producer", "max.message.bytes", "500000"));
            try {
                createTopic(a, "j-bad", 1, Map.of("retention.ms", "not-a-number"));
                check(false, "a bad config was accepted");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof org.apache.kafka.common.errors.InvalidConfigurationException,
                        "bad config: " + e.getCause());
            }
            TopicDescription td = a.describeTopics(List.of("j-admin")).allTopicNames().get().get("j-admin");
            check(td.partitions().size() == 2, "two partitions: " + td);
            ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, "j-admin");
            Config cfg = a.describeConfigs(List.of(res)).all().get().get(res);
            check("3600000".equals(cfg.get("retention.ms").value()), "retention.ms: " + cfg.get("retention.ms"));
            check(cfg.get("retention.ms").source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, "its source");
            check(cfg.get("segment.jitter.ms") != null, "every Kafka topic config is described");

            // incrementalAlterConfigs.
            a.incrementalAlterConfigs(Map.of(res, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("max.message.bytes", ""), AlterConfigOp.OpType.DELETE))))
                    .all().get(30, TimeUnit.SECONDS);
            cfg = a.describeConfigs(List.of(res)).all().get().get(res);
            check("7200000".equals(cfg.get("retention.ms").value()), "altered retention.ms");
            check(cfg.get("max.message.bytes").source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, "deleted override");

            // createPartitions.
            a.createPartitions(Map.of("j-admin", NewPartitions.increaseTo(4))).all().get(30, TimeUnit.SECONDS);
            td = a.describeTopics(List.of("j-admin")).allTopicNames().get().get("j-admin");
            check(td.partitions().size() == 4, "four partitions now");

            // listOffsets and deleteRecords.
            produceN("j-admin", 4, 40, 1_700_000_000_000L);
            TopicPartition p0 = new TopicPartition("j-admin", 0);
            long end = a.listOffsets(Map.of(p0, OffsetSpec.latest())).partitionResult(p0).get().offset();
            check(end == 10, "latest offset of partition 0: " + end);
            long ts = a.listOffsets(Map.of(p0, OffsetSpec.forTimestamp(1_700_000_000_020L))).partitionResult(p0).get().offset();
            check(ts == 5, "offset for timestamp: " + ts);
            a.deleteRecords(Map.of(p0, RecordsToDelete.beforeOffset(4))).all().get(30, TimeUnit.SECONDS);
            long start = a.listOffsets(Map.of(p0, OffsetSpec.earliest())).partitionResult(p0).get().offset();
            check(start == 4, "earliest after deleteRecords: " + start);

            // Groups: one commits, then list/describe/offsets/alter/delete.
            try (KafkaConsumer<String, byte[]> c = consumer(Map.of(ConsumerConfig.GROUP_ID_CONFIG, "j-admin-group"))) {
                c.subscribe(List.of("j-admin"));
                List<ConsumerRecord<String, byte[]>> got = new ArrayList<>();
                long deadline = System.currentTimeMillis() + 60_000;
                while (got.size() < 36) {
                    check(System.currentTimeMillis() < deadline, "group read " + got.size());
                    for (var r : c.poll(Duration.ofMillis(100))) got.add(r);
                }
                c.commitSync();
                Collection<ConsumerGroupListing> groups = a.listConsumerGroups().all().get(30, TimeUnit.SECONDS);
                check(groups.stream().anyMatch(g -> g.groupId().equals("j-admin-group")), "listed: " + groups);
                ConsumerGroupDescription d = a.describeConsumerGroups(List.of("j-admin-group"))
                        .describedGroups().get("j-admin-group").get();
                check(d.members().size() == 1 && d.groupState() == GroupState.STABLE, "described: " + d);
            }
            Map<TopicPartition, OffsetAndMetadata> offs = a.listConsumerGroupOffsets("j-admin-group")
                    .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
            check(offs.get(p0) != null && offs.get(p0).offset() == 10, "group offsets: " + offs);
            a.alterConsumerGroupOffsets("j-admin-group", Map.of(p0, new OffsetAndMetadata(5)))
                    .all().get(30, TimeUnit.SECONDS);
            offs = a.listConsumerGroupOffsets("j-admin-group").partitionsToOffsetAndMetadata().get();
            check(offs.get(p0).offset() == 5, "altered group offset: " + offs.get(p0));
            a.deleteConsumerGroups(List.of("j-admin-group")).all().get(30, TimeUnit.SECONDS);
            check(a.listConsumerGroups().all().get().stream().noneMatch(g -> g.groupId().equals("j-admin-group")),
                    "the group is gone");

            // describeLogDirs.
            int broker = nodes.iterator().next().id();
            var dirs = a.describeLogDirs(List.of(broker)).allDescriptions().get(30, TimeUnit.SECONDS).get(broker);
            check(dirs != null && !dirs.isEmpty(), "log dirs: " + dirs);
            check(dirs.values().stream().anyMatch(d -> d.replicaInfos().containsKey(p0)), "j-admin-0 in a log dir");

            // deleteTopics.
            a.deleteTopics(List.of("j-admin")).all().get(30, TimeUnit.SECONDS);
            long deadline = System.currentTimeMillis() + 30_000;
            while (a.listTopics().names().get().contains("j-admin")) {
                check(System.currentTimeMillis() < deadline, "the topic is gone");
                Thread.sleep(50);
            }
        }
    }

    // ---------------------------------------------------------------------------- streams

    /**
     * Kafka Streams word count (at_least_once): lines in, a count per word out. The
     * groupBy makes Streams create a repartition topic and the count a compacted changelog.
     */
    static final String EOS_IN = "eos-words-in", EOS_OUT = "eos-words-out";
    static final String[] EOS_LINES = {
        "the quick brown fox", "jumps over the lazy dog", "the dog barks", "a fox is quick", "the end",
    };
    static final int EOS_ROUNDS = 300;

    /**
     * Kafka Streams word count with exactly_once_v2, killed (SIGKILL) in the middle of its
     * run and started again: every word's committed counts on the output topic are exactly
     * 1, 2, ..., its total, once each (no update lost, none applied twice).
     */
    static void streamsEos() throws Exception {
        try (Admin a = admin_()) {
            createTopic(a, EOS_IN, 2, Map.of());
            createTopic(a, EOS_OUT, 2, Map.of());
        }
        Map<String, Long> expected = new TreeMap<>();
        try (KafkaProducer<String, byte[]> p = producer(Map.of(ProducerConfig.ACKS_CONFIG, "all"))) {
            for (int r = 0; r < EOS_ROUNDS; r++) {
                for (int i = 0; i < EOS_LINES.length; i++) {
                    p.send(new ProducerRecord<>(EOS_IN, "line" + i, EOS_LINES[i].getBytes(StandardCharsets.UTF_8)));
                    for (String w : EOS_LINES[i].split(" ")) expected.merge(w, 1L, Long::sum);
                }
            }
            p.flush();
        }
        long total = expected.values().stream().mapToLong(Long::longValue).sum();
        String javaBin = java.nio.file.Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = List.of(javaBin, "-cp", System.getProperty("java.class.path"), "runnel.ClientsTest",
                "streams-eos-app", bootstrap);
        Map<String, List<Long>> counts = new TreeMap<>();
        Properties cp = base();
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        try (KafkaConsumer<String, Long> c = new KafkaConsumer<>(cp, new StringDeserializer(), new LongDeserializer())) {
            c.assign(List.of(new TopicPartition(EOS_OUT, 0), new TopicPartition(EOS_OUT, 1)));
            c.seekToBeginning(c.assignment());
            // The first instance: killed once part of the input is counted (committed).
            Process first = new ProcessBuilder(cmd).redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
            long seen = 0;
            long deadline = System.currentTimeMillis() + 120_000;
            while (seen < total / 4) {
                check(System.currentTimeMillis() < deadline, "the first instance committed " + seen + " updates");
                check(first.isAlive(), "the first instance exited with " + (first.isAlive() ? 0 : first.exitValue()));
                for (var r : c.poll(Duration.ofMillis(100))) {
                    counts.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(r.value());
                    seen++;
                }
            }
            check(seen < total, "the first instance finished before it could be killed");
            first.destroyForcibly().waitFor();
            System.out.println("killed the first instance after " + seen + " of " + total + " updates");
            // The second instance takes over the same application id and finishes.
            Process second = new ProcessBuilder(cmd).redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.INHERIT).start();
            try {
                deadline = System.currentTimeMillis() + 180_000;
                while (!done(counts, expected)) {
                    check(System.currentTimeMillis() < deadline, "counts so far: " + last(counts) + ", expected " + expected);
                    check(second.isAlive(), "the second instance exited");
                    for (var r : c.poll(Duration.ofMillis(200))) {
                        counts.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(r.value());
                    }
                }
                // Anything more would be an update applied twice.
                for (var r : c.poll(Duration.ofMillis(1500))) {
                    counts.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(r.value());
                }
            } finally {
                second.destroyForcibly().waitFor();
            }
        }
        for (var e : expected.entrySet()) {
            List<Long> got = counts.get(e.getKey());
            List<Long> want = new ArrayList<>();
            for (long i = 1; i <= e.getValue(); i++) want.add(i);
            check(want.equals(got), "committed counts of '" + e.getKey() + "': " + got);
        }
        System.out.println("exactly once: " + last(counts));
    }

    static boolean done(Map<String, List<Long>> counts, Map<String, Long> expected) {
        return expected.entrySet().stream().allMatch(e -> {
            List<Long> l = counts.get(e.getKey());
            return l != null && !l.isEmpty() && l.get(l.size() - 1) >= e.getValue();
        });
    }

    static Map<String, Long> last(Map<String, List<Long>> counts) {
        Map<String, Long> out = new TreeMap<>();
        counts.forEach((k, v) -> out.put(k, v.get(v.size() - 1)));
        return out;
    }

    /** The word count application of {@link #streamsEos}, run until killed. */
    static void streamsEosApp() throws Exception {
        Properties props = base();
        props.put(org.apache.kafka.streams.StreamsConfig.APPLICATION_ID_CONFIG, "runnel-eos-wordcount");
        props.put(org.apache.kafka.streams.StreamsConfig.PROCESSING_GUARANTEE_CONFIG, "exactly_once_v2");
        props.put(org.apache.kafka.streams.StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.String().getClass());
        props.put(org.apache.kafka.streams.StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.String().getClass());
        // A fresh state dir: the restart restores its store from the changelog.
        props.put(org.apache.kafka.streams.StreamsConfig.STATE_DIR_CONFIG,
                java.nio.file.Files.createTempDirectory("runnel-streams-eos").toString());
        props.put(org.apache.kafka.streams.StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(org.apache.kafka.streams.StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // Small fetches and a pause per line, so a kill lands in the middle of the run.
        props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 20);
        props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 6000);
        var builder = new org.apache.kafka.streams.StreamsBuilder();
        builder.<String, String>stream(EOS_IN)
                .peek((k, v) -> {
                    try {
                        Thread.sleep(3);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                })
                .flatMapValues(v -> Arrays.asList(v.toLowerCase(Locale.ROOT).split("\\W+")))
                .groupBy((k, w) -> w)
                .count()
                .toStream()
                .to(EOS_OUT, org.apache.kafka.streams.kstream.Produced.with(Serdes.String(), Serdes.Long()));
        var app = new org.apache.kafka.streams.KafkaStreams(builder.build(), props);
        app.setUncaughtExceptionHandler(e -> {
            e.printStackTrace(System.out);
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                    .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        app.start();
        Thread.sleep(Long.MAX_VALUE);
    }

    static void streams() throws Exception {
        String in = "words-in", out = "words-out";
        try (Admin a = admin_()) {
            createTopic(a, in, 2, Map.of());
            createTopic(a, out, 2, Map.of());
        }
        String[] lines = {
            "the quick brown fox", "jumps over the lazy dog", "the dog barks",
            "a fox is quick", "the end",
        };
        Map<String, Long> expected = new TreeMap<>();
        int rounds = 20;
        for (int r = 0; r < rounds; r++) {
            for (String l : lines) {
                for (String w : l.split(" ")) expected.merge(w, 1L, Long::sum);
            }
        }
        try (KafkaProducer<String, byte[]> p = producer(Map.of(ProducerConfig.ACKS_CONFIG, "all"))) {
            for (int r = 0; r < rounds; r++) {
                for (int i = 0; i < lines.length; i++) {
                    p.send(new ProducerRecord<>(in, "line" + i, lines[i].getBytes(StandardCharsets.UTF_8)));
                }
            }
            p.flush();
        }

        Properties props = base();
        props.put(org.apache.kafka.streams.StreamsConfig.APPLICATION_ID_CONFIG, "runnel-wordcount");
        props.put(org.apache.kafka.streams.StreamsConfig.PROCESSING_GUARANTEE_CONFIG, "at_least_once");
        props.put(org.apache.kafka.streams.StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.String().getClass());
        props.put(org.apache.kafka.streams.StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.String().getClass());
        props.put(org.apache.kafka.streams.StreamsConfig.STATE_DIR_CONFIG,
                java.nio.file.Files.createTempDirectory("runnel-streams").toString());
        props.put(org.apache.kafka.streams.StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        props.put(org.apache.kafka.streams.StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        var builder = new org.apache.kafka.streams.StreamsBuilder();
        builder.<String, String>stream(in)
                .flatMapValues(v -> Arrays.asList(v.toLowerCase(Locale.ROOT).split("\\W+")))
                .groupBy((k, w) -> w)
                .count()
                .toStream()
                .to(out, org.apache.kafka.streams.kstream.Produced.with(Serdes.String(), Serdes.Long()));
        AtomicReference<Throwable> failed = new AtomicReference<>();
        try (var app = new org.apache.kafka.streams.KafkaStreams(builder.build(), props)) {
            app.setUncaughtExceptionHandler(e -> {
                failed.set(e);
                return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                        .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            app.start();
            // The latest count per word on the output topic must reach the expected ones.
            Map<String, Long> latest = new TreeMap<>();
            Properties cp = base();
            cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            try (KafkaConsumer<String, Long> c = new KafkaConsumer<>(cp, new StringDeserializer(), new LongDeserializer())) {
                c.assign(List.of(new TopicPartition(out, 0), new TopicPartition(out, 1)));
                c.seekToBeginning(c.assignment());
                long deadline = System.currentTimeMillis() + 120_000;
                while (!latest.equals(expected)) {
                    check(failed.get() == null, "the Streams application failed: " + failed.get());
                    check(System.currentTimeMillis() < deadline,
                            "word counts: " + latest + " (state " + app.state() + "), expected " + expected);
                    for (var r : c.poll(Duration.ofMillis(200))) latest.put(r.key(), r.value());
                }
            }
            // Streams made its internal topics here.
            try (Admin a = admin_()) {
                Set<String> names = a.listTopics(new ListTopicsOptions().listInternal(true)).names().get();
                check(names.stream().anyMatch(n -> n.startsWith("runnel-wordcount-") && n.endsWith("-repartition")),
                        "a repartition topic: " + names);
                String changelog = names.stream()
                        .filter(n -> n.startsWith("runnel-wordcount-") && n.endsWith("-changelog"))
                        .findFirst().orElseThrow(() -> new AssertionError("a changelog topic: " + names));
                ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, changelog);
                Config cfg = a.describeConfigs(List.of(res)).all().get().get(res);
                check(cfg.get("cleanup.policy").value().contains("compact"), "a compacted changelog: " + cfg.get("cleanup.policy"));
            }
            System.out.println("word counts: " + latest);
        }
    }
}
