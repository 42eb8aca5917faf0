#!/usr/bin/env node
// A webtorrent (npm library, 1.x) leecher for scripts/bench_download.py.
//
// Usage: node webtorrent_leech.js TORRENT OUTDIR [--peer HOST:PORT]...
//
// Why not webtorrent-cli: its CLI cannot switch DHT and LSD off, and a benchmark must neither
// leave the loopback swarm nor find peers by other means than the others (LOOPBACK-SWARMS.md).
// So: {dht: false, lsd: false, utp: false, webSeeds: false}, the torrent's own trackers, plus
// peers given with --peer.
//
// stdout: JSON lines.  {"event":"ready"} once the torrent is added; {"event":"first_piece",
// "at": <unix seconds>} when the first piece passed its SHA-1 check and was written (webtorrent
// emits no event for that, so its private _markVerified is wrapped); {"event":"done","bytes":N,
// "seconds":S,"first_piece_at":T,"started_at":T0} when every piece is verified.  Exit 0 then,
// 1 on error.  Requires the `webtorrent` module on NODE_PATH (scripts/bench installs it).
'use strict'

const WebTorrent = require('webtorrent')

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const args = process.argv.slice(2)
const peers = []
const positional = []
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--peer') peers.push(args[++i])
  else positional.push(args[i])
}
if (positional.length !== 2) {
  process.stderr.write('usage: webtorrent_leech.js TORRENT OUTDIR [--peer HOST:PORT]...\n')
  process.exit(2)
}
const [torrentPath, outDir] = positional

const startedAt = Date.now() / 1000
const start = process.hrtime.bigint()
let firstPieceAt = null

const client = new WebTorrent({ dht: false, lsd: false, utp: false, webSeeds: false })
client.on('error', err => {
  emit({ event: 'error', error: String(err) })
  process.exit(1)
})

const torrent = client.add(torrentPath, { path: outDir })
const markVerified = torrent._markVerified
torrent._markVerified = function (index) {
  markVerified.call(this, index)
  if (firstPieceAt === null) {
    firstPieceAt = Date.now() / 1000
    emit({ event: 'first_piece', at: firstPieceAt, index })
  }
}
torrent.on('error', err => {
  emit({ event: 'error', error: String(err) })
  process.exit(1)
})
torrent.on('warning', err => process.stderr.write('webtorrent warning: ' + err + '\n'))
torrent.on('infoHash', () => {
  for (const p of peers) torrent.addPeer(p)
})
torrent.on('ready', () => emit({ event: 'ready', pieces: torrent.pieces.length }))
torrent.on('done', () => {
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  emit({
    event: 'done',
    bytes: torrent.length,
    seconds,
    first_piece_at: firstPieceAt,
    started_at: startedAt
  })
  // Flush the last writes to the files before leaving (destroy closes the store).
  client.destroy(err => process.exit(err ? 1 : 0))
})
