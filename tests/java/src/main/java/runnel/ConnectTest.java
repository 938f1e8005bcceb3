package runnel;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * A Kafka Connect distributed worker (connect-runtime, in a child JVM) against Runnel: it
 * creates and checks its three compacted internal topics, a file source connector
 * ({@link LineFileSource}, FileStreamSource's behaviour) moves a file's lines into a topic,
 * and a worker started again after a stop resumes from the offsets it stored in Runnel (no
 * line twice, none lost). Prints OK or FAILED; run by
 * tests/e2e/tools.rs as `ConnectTest HOST:PORT`.
 */
public final class ConnectTest {
    static final String TOPIC = "connect-lines";
    static final Set<String> INTERNAL = Set.of("connect-configs", "connect-offsets", "connect-status");

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        try {
            run(bootstrap);
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

    static void run(String bootstrap) throws Exception {
        Path dir = Files.createTempDirectory("runnel-connect");
        Path input = dir.resolve("input.txt");
        append(input, 0, 500);
        int port;
        try (var s = new java.net.ServerSocket(0)) {
            port = s.getLocalPort();
        }
        Path worker = dir.resolve("worker.properties");
        Files.writeString(worker, String.join("\n",
                "bootstrap.servers=" + bootstrap,
                "group.id=runnel-connect",
                "key.converter=org.apache.kafka.connect.storage.StringConverter",
                "value.converter=org.apache.kafka.connect.storage.StringConverter",
                "config.storage.topic=connect-configs",
                "offset.storage.topic=connect-offsets",
                "status.storage.topic=connect-status",
                "config.storage.replication.factor=1",
                "offset.storage.replication.factor=1",
                "status.storage.replication.factor=1",
                "offset.flush.interval.ms=500",
                "listeners=http://127.0.0.1:" + port,
                "plugin.discovery=only_scan",
                "") );
        String rest = "http://127.0.0.1:" + port;
        HttpClient http = HttpClient.newHttpClient();
        List<String> seen = new ArrayList<>();
        try (KafkaConsumer<String, String> c = consumer(bootstrap)) {
            Process first = start(worker, dir.resolve("worker1.log"));
            try {
                waitFor("the worker's REST API", () -> get(http, rest + "/").statusCode() == 200, first, dir);
                String body = "{\"name\":\"file-source\",\"config\":{"
                        + "\"connector.class\":\"runnel.LineFileSource\","
                        + "\"tasks.max\":\"1\",\"file\":\"" + input + "\",\"topic\":\"" + TOPIC + "\"}}";
                HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create(rest + "/connectors"))
                        .header("Content-Type", "application/json")
                        .POST(HttpRequest.BodyPublishers.ofString(body)).build(),
                        HttpResponse.BodyHandlers.ofString());
                check(r.statusCode() == 201, "create connector: " + r.statusCode() + " " + r.body());
                c.assign(List.of(new TopicPartition(TOPIC, 0)));
                c.seekToBeginning(c.assignment());
                readUntil(c, seen, 500, first, dir);
                // The source offset of the last line is stored (flushed every 500 ms).
                waitFor("the connector's offsets stored", () -> storedPosition(bootstrap) >= Files.size(input), first, dir);
            } finally {
                stop(first);
            }
            try (Admin a = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
                for (String t : INTERNAL) {
                    Config cfg = a.describeConfigs(List.of(new ConfigResource(ConfigResource.Type.TOPIC, t)))
                            .all().get().values().iterator().next();
                    check(cfg.get("cleanup.policy").value().equals("compact"), t + " is compacted");
                }
            }
            append(input, 500, 800);
            Process second = start(worker, dir.resolve("worker2.log"));
            try {
                readUntil(c, seen, 800, second, dir);
                // Nothing more comes: the second worker resumed where the first stopped.
                var extra = c.poll(Duration.ofSeconds(3));
                check(extra.isEmpty(), "lines sent twice: " + extra.count());
            } finally {
                stop(second);
            }
        }
        for (int i = 0; i < 800; i++) {
            check(seen.get(i).equals("line " + i), "line " + i + " is " + seen.get(i));
        }
        check(seen.size() == 800, "800 lines, each once: " + seen.size());
    }

    static void append(Path f, int from, int to) throws IOException {
        StringBuilder sb = new StringBuilder();
        for (int i = from; i < to; i++) {
            sb.append("line ").append(i).append('\n');
        }
        Files.writeString(f, sb, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    }

    static Process start(Path worker, Path log) throws IOException {
        return new ProcessBuilder("java", "-cp", System.getProperty("java.class.path"),
                "org.apache.kafka.connect.cli.ConnectDistributed", worker.toString())
                .redirectErrorStream(true).redirectOutput(log.toFile()).start();
    }

    static void stop(Process p) throws InterruptedException {
        p.destroy(); // SIGTERM: the worker stops its tasks and flushes their offsets
        if (!p.waitFor(60, java.util.concurrent.TimeUnit.SECONDS)) {
            p.destroyForcibly();
        }
    }

    static KafkaConsumer<String, String> consumer(String bootstrap) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return new KafkaConsumer<>(p);
    }

    /** The byte position the stored source offset names (-1: none yet). */
    static long storedPosition(String bootstrap) {
        try (KafkaConsumer<String, String> c = consumer(bootstrap)) {
            List<TopicPartition> parts = new ArrayList<>();
            c.partitionsFor("connect-offsets").forEach(p -> parts.add(new TopicPartition(p.topic(), p.partition())));
            c.assign(parts);
            c.seekToBeginning(parts);
            var end = c.endOffsets(parts);
            long position = -1;
            long deadline = System.currentTimeMillis() + 10_000;
            while (parts.stream().anyMatch(tp -> c.position(tp) < end.get(tp))
                    && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    var m = java.util.regex.Pattern.compile("\"position\":(\\d+)").matcher(String.valueOf(r.value()));
                    if (m.find()) {
                        position = Math.max(position, Long.parseLong(m.group(1)));
                    }
                }
            }
            return position;
        } catch (Exception e) {
            return -1;
        }
    }

    static void readUntil(KafkaConsumer<String, String> c, List<String> seen, int n, Process worker, Path dir)
            throws Exception {
        long deadline = System.currentTimeMillis() + 120_000;
        while (seen.size() < n) {
            check(System.currentTimeMillis() < deadline, "only " + seen.size() + " of " + n + " lines arrived"
                    + workerLogs(dir));
            check(worker.isAlive(), "the worker exited" + workerLogs(dir));
            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                seen.add(r.value());
            }
        }
    }

    interface Cond {
        boolean ok() throws Exception;
    }

    static void waitFor(String what, Cond cond, Process worker, Path dir) throws Exception {
        long deadline = System.currentTimeMillis() + 120_000;
        while (true) {
            try {
                if (cond.ok()) {
                    return;
                }
            } catch (IOException e) {
                // not up yet
            }
            check(worker.isAlive(), "the worker exited before " + what + workerLogs(dir));
            check(System.currentTimeMillis() < deadline, "timed out waiting for " + what + workerLogs(dir));
            Thread.sleep(200);
        }
    }

    static HttpResponse<String> get(HttpClient http, String url) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create(url)).GET().build(), HttpResponse.BodyHandlers.ofString());
    }

    static String workerLogs(Path dir) {
        StringBuilder sb = new StringBuilder();
        for (String name : List.of("worker1.log", "worker2.log")) {
            try {
                List<String> lines = Files.readAllLines(dir.resolve(name));
                sb.append("\n--- ").append(name).append(" (last 60 lines)\n");
                lines.subList(Math.max(0, lines.size() - 60), lines.size()).forEach(l -> sb.append(l).append('\n'));
            } catch (IOException e) {
                // not started
            }
        }
        return sb.toString();
    }
}
