package runnel;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.source.SourceConnector;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;

/**
 * A source connector that does what Kafka's FileStreamSource does: each line of `file` is a
 * record of `topic`, with the byte position after it as the source offset (partition
 * {"filename": file}, offset {"position": n}), so a restarted task resumes after the last
 * line whose offset Connect stored. Written on Connect's API for ConnectTest because
 * connect-file 4.4.0 is not served to this machine.
 */
public final class LineFileSource extends SourceConnector {
    private Map<String, String> props;

    @Override
    public String version() {
        return "1";
    }

    @Override
    public void start(Map<String, String> props) {
        this.props = props;
    }

    @Override
    public Class<? extends SourceTask> taskClass() {
        return Task.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        return List.of(props);
    }

    @Override
    public void stop() {}

    @Override
    public ConfigDef config() {
        return new ConfigDef()
                .define("file", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "The file to read.")
                .define("topic", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "The topic to write.");
    }

    public static final class Task extends SourceTask {
        private String file;
        private String topic;
        private long position;
        private Map<String, String> partition;

        @Override
        public String version() {
            return "1";
        }

        @Override
        public void start(Map<String, String> props) {
            file = props.get("file");
            topic = props.get("topic");
            partition = Map.of("filename", file);
            Map<String, Object> stored = context.offsetStorageReader().offset(partition);
            position = stored == null ? 0 : ((Number) stored.get("position")).longValue();
        }

        @Override
        public List<SourceRecord> poll() throws InterruptedException {
            List<SourceRecord> out = new ArrayList<>();
            try (RandomAccessFile f = new RandomAccessFile(file, "r")) {
                f.seek(position);
                byte[] rest = new byte[(int) Math.min(f.length() - position, 1 << 20)];
                f.readFully(rest);
                int start = 0;
                for (int i = 0; i < rest.length && out.size() < 200; i++) {
                    if (rest[i] == '\n') {
                        String line = new String(rest, start, i - start, StandardCharsets.UTF_8);
                        position += i + 1 - start;
                        start = i + 1;
                        out.add(new SourceRecord(partition, Map.of("position", position), topic, 0,
                                null, null, Schema.STRING_SCHEMA, line));
                    }
                }
            } catch (IOException e) {
                throw new org.apache.kafka.connect.errors.ConnectException(e);
            }
            if (out.isEmpty()) {
                Thread.sleep(100);
                return null;
            }
            return out;
        }

        @Override
        public void stop() {}
    }
}
