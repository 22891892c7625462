# The nixpkgs lib functions lem's Nix and the other stand-ins use, written from builtins.
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    foldl'
    isString
    listToAttrs
    replaceStrings
    split
    stringLength
    substring
    ;

  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  regexSpecials = [ "\\" "." "[" "]" "(" ")" "{" "}" "*" "+" "?" "^" "$" "|" ];

  self = rec {
    fix =
      f:
      let
        x = f x;
      in
      x;
    extends =
      overlay: f: final:
      let
        prev = f final;
      in
      prev // overlay final prev;
    composeExtensions =
      f: g: final: prev:
      let
        fApplied = f final prev;
      in
      fApplied // g final (prev // fApplied);
    composeManyExtensions = foldl' composeExtensions (_: _: { });

    genAttrs =
      names: f:
      listToAttrs (
        map (name: {
          inherit name;
          value = f name;
        }) names
      );
    mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (attrNames attrs);
    filterAttrs =
      pred: attrs:
      listToAttrs (
        map (name: {
          inherit name;
          value = attrs.${name};
        }) (filter (name: pred name attrs.${name}) (attrNames attrs))
      );
    unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

    inherit concatStringsSep;
    concatMapStrings = f: list: concatStringsSep "" (map f list);
    hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
    hasSuffix =
      suffix: s:
      let
        n = stringLength s;
        m = stringLength suffix;
      in
      n >= m && substring (n - m) m s == suffix;
    removePrefix =
      prefix: s:
      if hasPrefix prefix s then substring (stringLength prefix) (stringLength s - stringLength prefix) s else s;
    splitString =
      separator: s:
      filter isString (split (replaceStrings regexSpecials (map (c: "\\" + c) regexSpecials) separator) s);
    toLower = replaceStrings upper lower;
    escapeShellArg = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] s + "'";
  };
in
self
