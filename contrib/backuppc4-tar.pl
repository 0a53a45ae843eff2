# BackupPC 4 (and 3): per-host config for a VE backed up with the tar XferMethod through bpc-ovz.
# bpc-ovz stands in for ssh; it runs the HN's own tar on the snapshot (backup) or, confined to the
# VE's tree, into the VE (restore). Restores need --numeric-owner (the default below has it).
$Conf{XferMethod}          = 'tar';
$Conf{TarClientPath}       = '/bin/tar';   # ignored by bpc-ovz: the HN's own tar runs
$Conf{TarShareName}        = ['/'];
$Conf{TarClientCmd}        = '/usr/bin/bpc-ovz ssh --config /etc/bpc-ovz/config.yaml -q -x -n -l root $host env LC_ALL=C $tarPath -c -v -f - -C $shareName+ --totals';
$Conf{TarClientRestoreCmd} = '/usr/bin/bpc-ovz ssh --config /etc/bpc-ovz/config.yaml -q -x -l root $host env LC_ALL=C $tarPath -x -p --numeric-owner --same-owner -v -f - -C $shareName+';
$Conf{PingCmd}              = '';
$Conf{NmbLookupFindHostCmd} = '';
