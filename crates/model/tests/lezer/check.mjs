// Reads a JSON array of LogQL queries on stdin; writes a JSON array of
// booleans: whether Grafana's own LogQL grammar (@grafana/lezer-logql, the
// parser its Loki data source uses) accepts each one without an error node.
import { parser } from "@grafana/lezer-logql";

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const accepted = JSON.parse(input).map((query) => {
    let ok = true;
    parser.parse(query).iterate({
      enter: (node) => {
        if (node.type.isError) ok = false;
      },
    });
    return ok;
  });
  process.stdout.write(JSON.stringify(accepted));
});
