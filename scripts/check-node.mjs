// uWebSockets.js ships native builds for Node 16, 18 and 20 only; on Node 22+ socket.io does not work.
const major = Number(process.versions.node.split('.')[0]);
if (major !== 20) {
  console.error(
    `This server needs Node.js 20 (found ${process.versions.node}): uWebSockets.js has no native build for it.`,
  );
  process.exit(1);
}
