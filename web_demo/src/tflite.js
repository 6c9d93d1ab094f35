// The signature tensors of a TFLite flatbuffer, read straight from its bytes (Model.signature_defs
// -> SignatureDef.inputs/outputs -> TensorMap.tensor_index -> SubGraph.tensors[i].shape/type), as
// tftl/runtime/modelfile.py signature_tensors does, so the reader can check tftl.json and a state
// against the graph before LiteRT compiles anything. Every offset is bounds-checked.

export class FlatbufferError extends Error {}

function reader(data) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const u32 = (p) => {
    if (p < 0 || p + 4 > data.length) throw new FlatbufferError('offset out of bounds');
    return view.getUint32(p, true);
  };
  const fields = (table) => {
    if (table < 0 || table > data.length - 4) throw new FlatbufferError('table out of bounds');
    const vtable = table - view.getInt32(table, true);
    if (vtable < 0 || vtable > data.length - 4) throw new FlatbufferError('vtable out of bounds');
    const vlen = view.getUint16(vtable, true);
    const tlen = view.getUint16(vtable + 2, true);
    if (vlen < 4 || vtable + vlen > data.length || table + tlen > data.length) throw new FlatbufferError('table out of bounds');
    const out = [];
    for (let k = 4; k + 2 <= vlen; k += 2) out.push(view.getUint16(vtable + k, true));
    return out;
  };
  const vector = (table, f, index, size) => {
    if (index >= f.length || !f[index]) return null;
    const pos = table + f[index];
    const start = pos + u32(pos);
    const length = u32(start);
    if (start + 4 + length * size > data.length) throw new FlatbufferError('vector out of bounds');
    return { start: start + 4, length };
  };
  const elements = (table, f, index, size = 4) => {
    const v = vector(table, f, index, size);
    return v ? Array.from({ length: v.length }, (_, k) => v.start + k * size) : [];
  };
  const child = (pos) => {
    const table = pos + u32(pos);
    return { table, f: fields(table) };
  };
  const string = (table, f, index) => {
    const v = vector(table, f, index, 1);
    return v ? new TextDecoder('utf-8', { fatal: true }).decode(data.subarray(v.start, v.start + v.length)) : '';
  };
  const scalar = (table, f, index, kind) => {
    if (index >= f.length || !f[index]) return 0;
    const p = table + f[index];
    if (p + 4 > data.length) throw new FlatbufferError('field out of bounds');
    return kind === 'u32' ? view.getUint32(p, true) : view.getInt8(p);
  };
  return { u32, fields, elements, child, string, scalar, view };
}

/**
 * {signature: {inputs: {name: {shape, type}}, outputs: {...}}} of a TFLite model (type: TensorType code).
 * @throws {FlatbufferError} an offset, index or string outside the buffer
 */
export function signatureTensors(data) {
  const r = reader(data);
  try {
    const root = r.u32(0);
    const rf = r.fields(root);
    const subgraphs = r.elements(root, rf, 2);
    const out = {};
    for (const pos of r.elements(root, rf, 7)) {
      const sig = r.child(pos);
      const index = r.scalar(sig.table, sig.f, 4, 'u32');
      if (index >= subgraphs.length) throw new FlatbufferError('signature subgraph index out of range');
      const graph = r.child(subgraphs[index]);
      const tensors = r.elements(graph.table, graph.f, 0);
      const entry = {};
      for (const [side, field] of [['inputs', 0], ['outputs', 1]]) {
        entry[side] = {};
        for (const mpos of r.elements(sig.table, sig.f, field)) {
          const tmap = r.child(mpos);
          const t = r.scalar(tmap.table, tmap.f, 1, 'u32');
          if (t >= tensors.length) throw new FlatbufferError('signature tensor index out of range');
          const tensor = r.child(tensors[t]);
          const shape = r.elements(tensor.table, tensor.f, 0).map((p) => r.view.getInt32(p, true));
          entry[side][r.string(tmap.table, tmap.f, 0)] = { shape, type: r.scalar(tensor.table, tensor.f, 1, 'i8') };
        }
      }
      out[r.string(sig.table, sig.f, 2)] = entry;
    }
    return out;
  } catch (e) {
    if (e instanceof FlatbufferError) throw e;
    throw new FlatbufferError(`damaged flatbuffer (${e.message})`);
  }
}
